// Package store keeps document vectors and finds the nearest ones to a
// query. VectorStore is the seam where a distributed vector database can
// serve a fleet later; Exact, the embedded default, scans every vector
// (exact cosine on unit vectors), split over the CPUs.
package store

import (
	"container/heap"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/op-dbus/op-dbus/internal/search/embed"
)

// Hit is one nearest vector.
type Hit struct {
	ID    string
	Score float32
}

// VectorStore holds one unit vector per document ID.
type VectorStore interface {
	Dim() int
	Len() int
	// Upsert sets the vector of id (the store may keep v; callers must
	// not change it afterwards).
	Upsert(id string, v []float32) error
	Delete(id string)
	// Get returns the vector of id.
	Get(id string) ([]float32, bool)
	// Search returns the k vectors nearest to q (highest dot product),
	// best first, among the IDs allow accepts (all when allow is nil).
	Search(q []float32, k int, allow func(id string) bool) ([]Hit, error)
}

// Exact is an in-memory exact store. Safe for concurrent use.
type Exact struct {
	mu   sync.RWMutex
	dim  int
	ids  []string
	vecs [][]float32
	slot map[string]int
}

// NewExact returns an empty store for vectors of dim floats.
func NewExact(dim int) *Exact {
	return &Exact{dim: dim, slot: map[string]int{}}
}

// Dim implements VectorStore.
func (e *Exact) Dim() int { return e.dim }

// Len implements VectorStore.
func (e *Exact) Len() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.ids)
}

// Upsert implements VectorStore.
func (e *Exact) Upsert(id string, v []float32) error {
	if len(v) != e.dim {
		return fmt.Errorf("vector store: %q has dimension %d, the store %d: %w", id, len(v), e.dim, embed.ErrDimension)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if i, ok := e.slot[id]; ok {
		e.vecs[i] = v
		return nil
	}
	e.slot[id] = len(e.ids)
	e.ids = append(e.ids, id)
	e.vecs = append(e.vecs, v)
	return nil
}

// Delete implements VectorStore.
func (e *Exact) Delete(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i, ok := e.slot[id]
	if !ok {
		return
	}
	last := len(e.ids) - 1
	e.ids[i], e.vecs[i] = e.ids[last], e.vecs[last]
	e.slot[e.ids[i]] = i
	e.ids, e.vecs = e.ids[:last], e.vecs[:last]
	delete(e.slot, id)
}

// Get implements VectorStore.
func (e *Exact) Get(id string) ([]float32, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	i, ok := e.slot[id]
	if !ok {
		return nil, false
	}
	return e.vecs[i], true
}

// Search implements VectorStore.
func (e *Exact) Search(q []float32, k int, allow func(id string) bool) ([]Hit, error) {
	if len(q) != e.dim {
		return nil, fmt.Errorf("vector store: query has dimension %d, the store %d: %w", len(q), e.dim, embed.ErrDimension)
	}
	if k <= 0 {
		return nil, nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := len(e.ids)
	parts := runtime.GOMAXPROCS(0)
	if n < 4096 {
		parts = 1
	}
	results := make([]topK, parts)
	var wg sync.WaitGroup
	for p := 0; p < parts; p++ {
		lo, hi := p*n/parts, (p+1)*n/parts
		wg.Add(1)
		go func(t *topK) {
			defer wg.Done()
			t.k = k
			for i := lo; i < hi; i++ {
				s := embed.Dot(q, e.vecs[i])
				if len(t.h) == k && s <= t.h[0].score {
					continue
				}
				if allow != nil && !allow(e.ids[i]) {
					continue
				}
				t.push(i, s)
			}
		}(&results[p])
	}
	wg.Wait()
	var all []Hit
	for _, t := range results {
		for _, x := range t.h {
			all = append(all, Hit{ID: e.ids[x.i], Score: x.score})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].Score != all[j].Score {
			return all[i].Score > all[j].Score
		}
		return all[i].ID < all[j].ID
	})
	if len(all) > k {
		all = all[:k]
	}
	return all, nil
}

type scored struct {
	i     int
	score float32
}

// topK is a min-heap of the best k.
type topK struct {
	k int
	h minHeap
}

func (t *topK) push(i int, s float32) {
	if len(t.h) < t.k {
		heap.Push(&t.h, scored{i, s})
		return
	}
	t.h[0] = scored{i, s}
	heap.Fix(&t.h, 0)
}

type minHeap []scored

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i].score < h[j].score }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(scored)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
