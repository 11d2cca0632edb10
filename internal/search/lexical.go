package search

import (
	"math"

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
}

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
		buf = token.AppendTokens(buf, d.Context)
		for _, t := range buf {
			tf[t]++
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
	return lx
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
