package search

import (
	"math"
	"strings"

	"github.com/op-dbus/op-dbus/internal/search/token"
)

// BM25 parameters (the usual ones).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
	// nameWeight counts a term of the document's name this many times: a
	// question is mostly about what a thing is called.
	nameWeight = 3
)

type posting struct {
	doc uint32
	tf  float32
}

// lexical is an inverted index with BM25 scoring over the documents of an
// Index, rebuilt from them when they change.
type lexical struct {
	terms  map[string]uint32
	posts  [][]posting
	docLen []float32
	avgLen float32
	// replica marks a member that many objects of its service share
	// (replicaMin or more: Stop on every unit); distinct holds the words
	// of its object path that few of those objects have (dirmngr of
	// dirmngr.service, 42 of item0042), which name the object.
	replica  []bool
	distinct [][]string
	// group is the index of a document's member group (the same member
	// on several objects, see groupKey), -1 for none; groupSize counts
	// each group's documents.
	group     []int32
	groupSize []int32
}

// replicaMin is how many objects must share a member for it to be a
// replica.
const replicaMin = 8

func buildLexical(docs []Document) *lexical {
	lx := &lexical{terms: make(map[string]uint32, len(docs)/2+16), docLen: make([]float32, len(docs))}
	tf := map[string]float32{}
	var total float64
	var buf []string
	for i := range docs {
		d := &docs[i]
		clear(tf)
		buf = token.AppendTokens(buf[:0], d.Name)
		for _, t := range buf {
			tf[t] += nameWeight
		}
		buf = token.AppendTokens(buf[:0], d.Kind)
		buf = token.AppendTokens(buf, d.Text)
		for _, t := range buf {
			tf[t]++
		}
		buf = token.AppendTokens(buf[:0], d.Context)
		for _, t := range buf {
			tf[t] += tune.ContextWeight
		}
		var n float32
		for t, f := range tf {
			id, ok := lx.terms[t]
			if !ok {
				id = uint32(len(lx.posts))
				lx.terms[t] = id
				lx.posts = append(lx.posts, nil)
			}
			lx.posts[id] = append(lx.posts[id], posting{uint32(i), f})
			n += f
		}
		lx.docLen[i] = n
		total += float64(n)
	}
	if len(docs) > 0 {
		lx.avgLen = float32(total / float64(len(docs)))
	}
	lx.findReplicas(docs)
	return lx
}

// findReplicas fills replica and distinct.
func (lx *lexical) findReplicas(docs []Document) {
	lx.replica = make([]bool, len(docs))
	lx.distinct = make([][]string, len(docs))
	lx.group = make([]int32, len(docs))
	byKey := map[string]int32{}
	var groups [][]int
	for i := range docs {
		lx.group[i] = -1
		if k := groupKey(&docs[i]); k != "" {
			g, ok := byKey[k]
			if !ok {
				g = int32(len(groups))
				byKey[k] = g
				groups = append(groups, nil)
			}
			lx.group[i] = g
			groups[g] = append(groups[g], i)
		}
	}
	lx.groupSize = make([]int32, len(groups))
	for g, members := range groups {
		lx.groupSize[g] = int32(len(members))
	}
	var buf []string
	for _, members := range groups {
		if len(members) < replicaMin {
			continue
		}
		paths := make([][]string, len(members))
		df := map[string]int{}
		for k, i := range members {
			buf = token.AppendTokens(buf[:0], objectPath(&docs[i]))
			seen := map[string]bool{}
			for _, t := range buf {
				if !seen[t] {
					seen[t] = true
					df[t]++
					paths[k] = append(paths[k], t)
				}
			}
		}
		rare := max(1, len(members)/10)
		for k, i := range members {
			lx.replica[i] = true
			for _, t := range paths[k] {
				if df[t] <= rare {
					lx.distinct[i] = append(lx.distinct[i], t)
				}
			}
		}
	}
}

// objectPath is the object path in a member document's ID
// (dbus/BUS/SERVICE/PATH#...).
func objectPath(d *Document) string {
	id := strings.TrimPrefix(d.ID, d.Source)
	if i := strings.IndexByte(id, '#'); i >= 0 {
		id = id[:i]
	}
	return id
}

// score adds the BM25 score of each query term to acc (indexed by
// document) and returns the documents it touched.
func (lx *lexical) score(terms []string, weights []float32, acc []float32, touched []uint32) []uint32 {
	n := float64(len(lx.docLen))
	for qi, t := range terms {
		id, ok := lx.terms[t]
		if !ok {
			continue
		}
		ps := lx.posts[id]
		idf := float32(math.Log(1 + (n-float64(len(ps))+0.5)/(float64(len(ps))+0.5)))
		w := idf * weights[qi]
		for _, p := range ps {
			norm := bm25K1 * (1 - bm25B + bm25B*lx.docLen[p.doc]/lx.avgLen)
			s := w * p.tf * (bm25K1 + 1) / (p.tf + norm)
			if acc[p.doc] == 0 {
				touched = append(touched, p.doc)
			}
			acc[p.doc] += s
		}
	}
	return touched
}

// collapse keeps, of the touched documents allow accepts, those in no
// group and the best-scoring one of each group.
func (lx *lexical) collapse(touched []uint32, acc []float32, allow func(int) bool) []uint32 {
	best := make([]int32, len(lx.groupSize))
	for i := range best {
		best[i] = -1
	}
	out := touched[:0]
	for _, d := range touched {
		if !allow(int(d)) {
			continue
		}
		g := lx.group[d]
		if g < 0 {
			out = append(out, d)
			continue
		}
		if b := best[g]; b < 0 || acc[d] > acc[b] || (acc[d] == acc[b] && int32(d) < b) {
			best[g] = int32(d)
		}
	}
	for _, d := range best {
		if d >= 0 {
			out = append(out, uint32(d))
		}
	}
	return out
}
