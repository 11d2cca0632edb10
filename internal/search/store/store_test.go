package store

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/op-dbus/op-dbus/internal/search/embed"
)

func TestExact(t *testing.T) {
	s := NewExact(2)
	for id, v := range map[string][]float32{"a": {1, 0}, "b": {0.8, 0.6}, "c": {0, 1}, "d": {-1, 0}} {
		if err := s.Upsert(id, v); err != nil {
			t.Fatal(err)
		}
	}
	s.Delete("b")
	hs, err := s.Search([]float32{1, 0}, 2, nil)
	if err != nil || len(hs) != 2 || hs[0].ID != "a" || hs[1].ID != "c" || s.Len() != 3 {
		t.Fatalf("%+v %v", hs, err)
	}
	hs, _ = s.Search([]float32{1, 0}, 5, func(id string) bool { return id != "a" })
	if len(hs) != 2 || hs[0].ID != "c" {
		t.Fatalf("filtered %+v", hs)
	}
	if err := s.Upsert("e", []float32{1}); err == nil {
		t.Fatal("wrong dimension accepted")
	}
	if _, err := s.Search([]float32{1, 0, 0}, 1, nil); err == nil {
		t.Fatal("wrong query dimension accepted")
	}
	_ = embed.ErrDimension
}

// TestExactMatchesBruteForce checks the column-major search against a
// row-by-row scan with embed.Dot, for sparse and dense queries, after
// updates and deletes, across the parallel split.
func TestExactMatchesBruteForce(t *testing.T) {
	const dim, n = 64, 20000
	rng := rand.New(rand.NewPCG(1, 2))
	vec := func(density float64) []float32 {
		v := make([]float32, dim)
		for d := range v {
			if rng.Float64() < density {
				v[d] = float32(rng.NormFloat64())
			}
		}
		embed.Normalize(v)
		return v
	}
	s := NewExact(dim)
	rows := map[string][]float32{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("v%05d", i)
		rows[id] = vec(0.5)
		if err := s.Upsert(id, rows[id]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 7 {
		id := fmt.Sprintf("v%05d", i)
		s.Delete(id)
		delete(rows, id)
	}
	for i := 1; i < n; i += 11 {
		id := fmt.Sprintf("v%05d", i)
		if _, ok := rows[id]; ok {
			rows[id] = vec(0.5)
			_ = s.Upsert(id, rows[id])
		}
	}
	if s.Len() != len(rows) {
		t.Fatalf("Len %d, want %d", s.Len(), len(rows))
	}
	for qi, density := range []float64{0.1, 0.3, 1} {
		q := vec(density)
		type hit struct {
			id string
			s  float32
		}
		var want []hit
		for id, v := range rows {
			want = append(want, hit{id, embed.Dot(q, v)})
		}
		sort.Slice(want, func(i, j int) bool { return want[i].s > want[j].s })
		got, err := s.Search(q, 50, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, h := range got {
			// the same set in the same order, up to float rounding of
			// a different summation order
			if d := h.Score - want[i].s; d > 1e-5 || d < -1e-5 {
				t.Fatalf("query %d rank %d: %s %.7f, brute force %s %.7f", qi, i, h.ID, h.Score, want[i].id, want[i].s)
			}
			if sc, ok := s.Score(q, h.ID); !ok || sc != h.Score {
				t.Fatalf("Score(%s) = %v %v, Search said %v", h.ID, sc, ok, h.Score)
			}
			if v, ok := s.Get(h.ID); !ok || embed.Dot(v, rows[h.ID]) < 0.9999 {
				t.Fatalf("Get(%s) is not the vector stored", h.ID)
			}
		}
	}
	if s.Has("v00000") || !s.Has("v00001") {
		t.Fatal("Has after Delete")
	}
}
