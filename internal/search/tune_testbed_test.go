package search_test

import (
	"os"

	"testing"

	"github.com/op-dbus/op-dbus/internal/search"
	"github.com/op-dbus/op-dbus/internal/search/embed"
)

// half returns the even-numbered (parity 0) or odd-numbered (parity 1)
// labelled queries, numbered from 0 in file order.
func half(l labelled, parity int) labelled {
	out := labelled{Prefixes: l.Prefixes}
	for i, q := range l.Queries {
		if i%2 == parity {
			out.Queries = append(out.Queries, q)
		}
	}
	return out
}

// TestTestbedSearchTune searches the ranking parameters on the
// even-numbered labelled queries (coordinate ascent on recall@5, then
// MRR) and reports the odd-numbered ones beside them, so overfitting
// shows. It only runs with SEARCH_TUNE=1; the parameters it finds are
// copied into index.go by hand.
func TestTestbedSearchTune(t *testing.T) {
	if testing.Short() || os.Getenv("SEARCH_TUNE") == "" {
		t.Skip("set SEARCH_TUNE=1 to tune the ranking parameters")
	}
	l := startLive(t)
	lq := loadQueries(t)
	train, held := half(lq, 0), half(lq, 1)
	ix, _ := buildLive(t, l, embed.NewBuiltin(0))
	base := search.SetParams(search.Params{})
	search.SetParams(base)
	defer search.SetParams(base)
	score := func(p search.Params) (Quality, Quality) {
		search.SetParams(p)
		ix.Invalidate()
		return evaluate(t, ix, train, search.Combined), evaluate(t, ix, held, search.Combined)
	}
	better := func(a, b Quality) bool {
		if a.RecallAt5 != b.RecallAt5 {
			return a.RecallAt5 > b.RecallAt5+1e-9
		}
		return a.MRR > b.MRR+1e-9
	}
	best := base
	bt, bh := score(best)
	t.Logf("start %+v: train R@5 %.3f MRR %.3f | held-out R@5 %.3f MRR %.3f", best, bt.RecallAt5, bt.MRR, bh.RecallAt5, bh.MRR)
	axes := []struct {
		name string
		set  func(*search.Params, float32)
		vals []float32
	}{
		{"LexicalWeight", func(p *search.Params, v float32) { p.LexicalWeight = v }, []float32{0.4, 0.5, 0.6, 0.7, 0.8}},
		{"RRFK", func(p *search.Params, v float32) { p.RRFK = v }, []float32{0, 5, 20, 60}},
		{"SynonymWeight", func(p *search.Params, v float32) { p.SynonymWeight = v }, []float32{0.2, 0.3, 0.5, 0.7, 1}},
		{"ContextWeight", func(p *search.Params, v float32) { p.ContextWeight = v }, []float32{0.25, 0.5, 1}},
		{"MethodBoost", func(p *search.Params, v float32) { p.MethodBoost = v }, []float32{0, 0.1, 0.2, 0.35, 0.5}},
		{"ReplicaPenalty", func(p *search.Params, v float32) { p.ReplicaPenalty = v }, []float32{0, 0.1, 0.2, 0.35, 0.5}},
	}
	for round := 0; round < 2; round++ {
		for _, ax := range axes {
			for _, v := range ax.vals {
				p := best
				ax.set(&p, v)
				if p == best {
					continue
				}
				tr, ho := score(p)
				t.Logf("  %s=%.2f: train R@5 %.3f MRR %.3f | held-out R@5 %.3f MRR %.3f", ax.name, v, tr.RecallAt5, tr.MRR, ho.RecallAt5, ho.MRR)
				if better(tr, bt) {
					best, bt, bh = p, tr, ho
				}
			}
		}
		t.Logf("round %d best %+v: train R@5 %.3f MRR %.3f | held-out R@5 %.3f MRR %.3f", round, best, bt.RecallAt5, bt.MRR, bh.RecallAt5, bh.MRR)
	}
}
