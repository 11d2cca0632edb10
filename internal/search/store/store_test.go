package store

import (
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
