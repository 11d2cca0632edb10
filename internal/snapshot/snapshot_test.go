package snapshot_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
	"github.com/op-dbus/op-dbus/internal/snapshot"
)

func bigState(n int) map[string]any {
	t, f := true, false
	st := &systemd.State{Units: map[string]*systemd.Unit{}}
	for i := range n {
		u := &systemd.Unit{ActiveState: "inactive", SubState: "dead", RawActiveState: "inactive", UnitFileState: "disabled", Enabled: &f, Masked: &f}
		if i%3 == 0 {
			u.ActiveState, u.SubState, u.RawActiveState, u.UnitFileState, u.Enabled = "active", "running", "active", "enabled", &t
		}
		st.Units[fmt.Sprintf("unit-%05d.service", i)] = u
	}
	return map[string]any{"systemd": st, "hostname": map[string]string{"static_hostname": "h"}}
}

func TestCreateDedupLoadPrune(t *testing.T) {
	s, err := snapshot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Create(bigState(100), "first", "manual")
	if err != nil {
		t.Fatal(err)
	}
	u1, _ := s.Usage()
	b, err := s.Create(bigState(100), "", "manual")
	if err != nil {
		t.Fatal(err)
	}
	u2, _ := s.Usage()
	if a.ID != b.ID {
		t.Errorf("same state, different IDs %s %s", a.ID, b.ID)
	}
	if u2-u1 > 1024 {
		t.Errorf("an unchanged snapshot added %d bytes", u2-u1)
	}
	st := bigState(100)
	st["hostname"] = map[string]string{"static_hostname": "other"}
	c, err := s.Create(st, "", "manual")
	if err != nil {
		t.Fatal(err)
	}
	if c.Plugins["systemd"] != a.Plugins["systemd"] || c.Plugins["hostname"] == a.Plugins["hostname"] {
		t.Errorf("blobs not shared per plugin: %v %v", a.Plugins, c.Plugins)
	}
	got, err := s.Get("first")
	if err != nil || got.ID != a.ID {
		t.Fatalf("by tag: %v %v", got, err)
	}
	raw, err := s.Load(got)
	if err != nil || !strings.Contains(string(raw["systemd"]), "unit-00099.service") {
		t.Fatalf("load: %v", err)
	}
	// A corrupted blob is detected by its hash.
	p := filepath.Join(s.Dir(), "blobs", a.Plugins["hostname"]+".json")
	if err := os.WriteFile(p, []byte(`{"static_hostname":"evil"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(got); err == nil || !strings.Contains(err.Error(), "does not match its hash") {
		t.Errorf("corrupt blob: %v", err)
	}
	if _, err := s.Get("zzzz"); err == nil || !strings.Contains(err.Error(), "no such snapshot") {
		t.Errorf("unknown id: %v", err)
	}
	removed, err := s.Prune(1, 0, time.Now())
	if err != nil || len(removed) != 2 {
		t.Fatalf("prune: %d %v", len(removed), err)
	}
	left, _ := s.List()
	if len(left) != 1 || left[0].Plugins["hostname"] != c.Plugins["hostname"] {
		t.Fatalf("after prune: %+v", left)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("a blob no snapshot uses was kept")
	}
}

// BenchmarkSnapshot10000Units: goal under 200 ms; the unchanged second
// snapshot reports the bytes it added.
func BenchmarkSnapshot10000Units(b *testing.B) {
	st := bigState(10000)
	b.Run("first", func(b *testing.B) {
		for range b.N {
			s, _ := snapshot.Open(b.TempDir())
			if _, err := s.Create(st, "", "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unchanged-second", func(b *testing.B) {
		s, _ := snapshot.Open(b.TempDir())
		if _, err := s.Create(st, "", "bench"); err != nil {
			b.Fatal(err)
		}
		before, _ := s.Usage()
		b.ResetTimer()
		for range b.N {
			if _, err := s.Create(st, "", "bench"); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		after, _ := s.Usage()
		b.ReportMetric(float64(after-before)/float64(b.N), "bytes-added/op")
		b.ReportMetric(float64(before), "first-bytes")
	})
}
