package txn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/snapshot"
)

// hostPlugin is a plugin whose live state is a settable name.
type hostPlugin struct{ name string }

func (p *hostPlugin) Name() string                    { return "host" }
func (p *hostPlugin) NewState() any                   { return &map[string]string{} }
func (p *hostPlugin) Available(context.Context) error { return nil }
func (p *hostPlugin) Query(context.Context) (any, error) {
	return map[string]string{"name": p.name}, nil
}
func (p *hostPlugin) Plan(_, _ any) ([]plugin.Op, error)     { return nil, nil }
func (p *hostPlugin) Apply(context.Context, plugin.Op) error { return nil }
func (p *hostPlugin) Subset(st any, _ []string) any          { return st }
func (p *hostPlugin) After() []string                        { return nil }

type memRecorder struct {
	mu   sync.Mutex
	recs []Record
}

func (r *memRecorder) Record(rec Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}

func (r *memRecorder) kinds(kind string) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, rec := range r.recs {
		if rec.Kind == kind {
			out = append(out, rec)
		}
	}
	return out
}

// TestSnapshotGoesOnPastADamagedManifest: a truncated old manifest neither
// stops the next snapshot nor its retention; it is recorded, and
// PruneCorrupt removes it and records that.
func TestSnapshotGoesOnPastADamagedManifest(t *testing.T) {
	dir := t.TempDir()
	st, err := snapshot.Open(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	p := &hostPlugin{name: "a"}
	rec := &memRecorder{}
	m := &Manager{Dir: dir, Engine: engine.New([]plugin.Plugin{p}), Snapshots: st, Recorder: rec, Keep: 2}
	ctx := context.Background()
	first, err := m.Snapshot(ctx, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	manifests, _ := filepath.Glob(filepath.Join(dir, "snapshots", "manifests", "*-"+first.ID+".json"))
	if len(manifests) != 1 {
		t.Fatalf("manifest: %v", manifests)
	}
	bad := manifests[0]
	if err := os.Truncate(bad, 40); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{"b", "c", "d"} {
		p.name = name
		if _, err := m.Snapshot(ctx, nil, ""); err != nil {
			t.Fatalf("snapshot with a damaged old manifest: %v", err)
		}
	}
	dmg := rec.kinds("snapshot-damage")
	if len(dmg) != 3 || !strings.Contains(dmg[0].Message, bad) || !strings.Contains(dmg[0].Message, "prune --corrupt") {
		t.Fatalf("damage records: %+v", dmg)
	}
	all, err := st.List()
	if err != nil || len(all) != 2 {
		t.Fatalf("retention with a damaged manifest: %+v %v", all, err)
	}
	if pr := rec.kinds("snapshot-prune"); len(pr) != 1 {
		t.Errorf("retention records: %+v", pr)
	}

	list, err := m.PruneCorrupt(true)
	if err != nil || len(list) != 1 || list[0].Path != bad {
		t.Fatalf("dry run: %+v %v", list, err)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Fatalf("the dry run removed the manifest: %v", err)
	}
	removed, err := m.PruneCorrupt(false)
	if err != nil || len(removed) != 1 || removed[0].Path != bad {
		t.Fatalf("prune corrupt: %+v %v", removed, err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("damaged manifest left: %v", err)
	}
	pr := rec.kinds("snapshot-prune")
	if len(pr) != 2 || !strings.Contains(pr[1].Message, "removed damaged snapshot manifest "+bad) {
		t.Errorf("removal records: %+v", pr)
	}
	if _, err := m.Snapshot(ctx, nil, ""); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.kinds("snapshot-damage")); n != 3 {
		t.Errorf("damage recorded after it was removed: %d records", n)
	}
}
