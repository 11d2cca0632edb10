// Package store keeps document vectors and finds the nearest ones to a
// query. VectorStore is the seam where a distributed vector database can
// serve a fleet later; Exact, the embedded default, scores every vector
// (exact inner product on unit vectors).
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
	// Upsert sets the vector of id (the store copies what it keeps).
	Upsert(id string, v []float32) error
	Delete(id string)
	// Has reports whether id has a vector.
	Has(id string) bool
	// Get returns a copy of the vector of id.
	Get(id string) ([]float32, bool)
	// Score returns the inner product of q with the vector of id.
	Score(q []float32, id string) (float32, bool)
	// Search returns the k vectors nearest to q (highest dot product),
	// best first, among the IDs allow accepts (all when allow is nil).
	Search(q []float32, k int, allow func(id string) bool) ([]Hit, error)
}

// Exact is an in-memory exact store. Safe for concurrent use.
//
// Vectors are kept column-major: cols[d][i] is dimension d of the i-th
// vector. A search adds q[d]·cols[d] into one score per vector for each
// dimension where the query is not zero, block by block so the scores
// stay in the L1 cache. Every vector is scored, so results are exact; a
// query of the built-in embedder has 10 to 30 of 256 dimensions set, so
// it reads a tenth of the vectors' bytes or less, sequentially. A dense
// query (an external model's) reads them all, as a row-major scan would.
type Exact struct {
	mu   sync.RWMutex
	dim  int
	ids  []string
	cols [][]float32
	slot map[string]int
}

// NewExact returns an empty store for vectors of dim floats.
func NewExact(dim int) *Exact {
	return &Exact{dim: dim, cols: make([][]float32, dim), slot: map[string]int{}}
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
		for d, x := range v {
			e.cols[d][i] = x
		}
		return nil
	}
	e.slot[id] = len(e.ids)
	e.ids = append(e.ids, id)
	for d, x := range v {
		e.cols[d] = append(e.cols[d], x)
	}
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
	e.ids[i] = e.ids[last]
	e.slot[e.ids[i]] = i
	e.ids = e.ids[:last]
	for d, c := range e.cols {
		c[i] = c[last]
		e.cols[d] = c[:last]
	}
	delete(e.slot, id)
}

// Has implements VectorStore.
func (e *Exact) Has(id string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	_, ok := e.slot[id]
	return ok
}

// Get implements VectorStore.
func (e *Exact) Get(id string) ([]float32, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	i, ok := e.slot[id]
	if !ok {
		return nil, false
	}
	v := make([]float32, e.dim)
	for d, c := range e.cols {
		v[d] = c[i]
	}
	return v, true
}

// Score implements VectorStore. It adds the products in the order Search
// does.
func (e *Exact) Score(q []float32, id string) (float32, bool) {
	if len(q) != e.dim {
		return 0, false
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	i, ok := e.slot[id]
	if !ok {
		return 0, false
	}
	var s float32
	for d, x := range q {
		if x != 0 {
			s += x * e.cols[d][i]
		}
	}
	return s, true
}

// block is how many scores one pass over the query's dimensions updates:
// 16 KiB of float32, well inside an L1 data cache.
const block = 4096

// Search implements VectorStore.
func (e *Exact) Search(q []float32, k int, allow func(id string) bool) ([]Hit, error) {
	if len(q) != e.dim {
		return nil, fmt.Errorf("vector store: query has dimension %d, the store %d: %w", len(q), e.dim, embed.ErrDimension)
	}
	if k <= 0 {
		return nil, nil
	}
	type term struct {
		d int
		x float32
	}
	var nz []term
	for d, x := range q {
		if x != 0 {
			nz = append(nz, term{d, x})
		}
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := len(e.ids)
	parts := runtime.GOMAXPROCS(0)
	if n < 4*block {
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
			acc := make([]float32, block)
			for b := lo; b < hi; b += block {
				a := acc[:min(block, hi-b)]
				clear(a)
				for _, tm := range nz {
					axpy(a, tm.x, e.cols[tm.d][b:b+len(a)])
				}
				for j, s := range a {
					if len(t.h) == k && s <= t.h[0].score {
						continue
					}
					if allow != nil && !allow(e.ids[b+j]) {
						continue
					}
					t.push(b+j, s)
				}
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

// axpy adds x·c to a (len(c) >= len(a)).
func axpy(a []float32, x float32, c []float32) {
	c = c[:len(a)]
	i := 0
	for ; i+4 <= len(a); i += 4 {
		aa, cc := a[i:i+4:i+4], c[i:i+4:i+4]
		aa[0] += x * cc[0]
		aa[1] += x * cc[1]
		aa[2] += x * cc[2]
		aa[3] += x * cc[3]
	}
	for ; i < len(a); i++ {
		a[i] += x * c[i]
	}
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
