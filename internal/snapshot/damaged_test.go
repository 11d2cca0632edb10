package snapshot_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/snapshot"
)

// hostState is a small state whose hostname blob is unique to name.
func hostState(name string) map[string]any {
	return map[string]any{"hostname": map[string]string{"static_hostname": name}}
}

// manifestPath is the manifest file of sn.
func manifestPath(t *testing.T, s *snapshot.Store, sn *snapshot.Snapshot) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(s.Dir(), "manifests", "*-"+sn.ID+".json"))
	if len(m) != 1 {
		t.Fatalf("manifest of %s: %v", sn.ID, m)
	}
	return m[0]
}

// truncate cuts a file to half its length, as a crash of a writer that
// wrote in place would.
func truncate(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

func create(t *testing.T, s *snapshot.Store, host, tag string) *snapshot.Snapshot {
	t.Helper()
	sn, err := s.Create(hostState(host), tag, "manual")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond) // distinct times, so the order is known
	return sn
}

func TestTruncatedManifestIsReportedNotFatal(t *testing.T) {
	s, err := snapshot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := create(t, s, "a", "first")
	b := create(t, s, "b", "")
	c := create(t, s, "c", "last")
	bad := manifestPath(t, s, b)
	truncate(t, bad)

	all, err := s.List()
	if err != nil {
		t.Fatalf("List fails wholesale on one damaged manifest: %v", err)
	}
	if len(all) != 2 || all[0].ID != a.ID || all[1].ID != c.ID {
		t.Fatalf("List: %+v", all)
	}
	dmg, err := s.Damaged()
	if err != nil || len(dmg) != 1 {
		t.Fatalf("Damaged: %+v %v", dmg, err)
	}
	d := dmg[0]
	if d.Path != bad || d.ID != b.ID || d.Reason == "" || d.Size == 0 {
		t.Errorf("damage report: %+v", d)
	}
	if msg := d.Error(); !strings.Contains(msg, bad) || !strings.Contains(msg, "op-dbus snapshot prune --corrupt") {
		t.Errorf("the error does not name the file and the way out: %s", msg)
	}
	if !errors.Is(d, snapshot.ErrDamaged) {
		t.Errorf("not ErrDamaged")
	}

	// Get still finds the others, and says why the damaged one is missing.
	if got, err := s.Get("last"); err != nil || got.ID != c.ID {
		t.Errorf("Get by tag: %v %v", got, err)
	}
	if got, err := s.Get(a.ID[:6]); err != nil || got.ID != a.ID {
		t.Errorf("Get by ID: %v %v", got, err)
	}
	_, err = s.Get(b.ID)
	var de snapshot.Damaged
	if !errors.Is(err, snapshot.ErrDamaged) || !errors.As(err, &de) || de.Path != bad {
		t.Errorf("Get of the damaged snapshot: %v", err)
	}
	_, err = s.Get("zzzz")
	if !errors.Is(err, snapshot.ErrNotFound) || !strings.Contains(err.Error(), "1 damaged manifest") {
		t.Errorf("Get of an unknown snapshot does not mention the damage: %v", err)
	}
	if _, err := s.Load(&all[0]); err != nil {
		t.Errorf("Load of a good snapshot: %v", err)
	}
}

func TestPruneSkipsDamagedAndPruneDamagedRemovesThem(t *testing.T) {
	s, err := snapshot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := create(t, s, "old", "")
	var good []*snapshot.Snapshot
	for _, h := range []string{"g1", "g2", "g3"} {
		good = append(good, create(t, s, h, ""))
	}
	bad := manifestPath(t, s, old)
	// Cut inside the plugins map, after the blob hash: the text still
	// names the blob, so Prune keeps it for a person to look at.
	b, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	blob := old.Plugins["hostname"]
	cut := strings.Index(string(b), blob) + len(blob)
	if err := os.WriteFile(bad, b[:cut], 0o600); err != nil {
		t.Fatal(err)
	}
	oldBlob := filepath.Join(s.Dir(), "blobs", blob+".json")

	// Keep 2: the damaged oldest one does not count, so only g1 goes.
	removed, err := s.Prune(2, 0, time.Now())
	if err != nil {
		t.Fatalf("Prune fails on a damaged manifest: %v", err)
	}
	if len(removed) != 1 || removed[0].ID != good[0].ID {
		t.Fatalf("Prune removed %+v; want only %s", removed, good[0].ID)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Errorf("Prune removed the damaged manifest: %v", err)
	}
	if _, err := os.Stat(oldBlob); err != nil {
		t.Errorf("Prune removed the blob the damaged manifest names: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "blobs", good[0].Plugins["hostname"]+".json")); !os.IsNotExist(err) {
		t.Errorf("the pruned snapshot's blob is left: %v", err)
	}
	// Age-based pruning skips it too.
	if removed, err := s.Prune(0, time.Nanosecond, time.Now().Add(-time.Hour)); err != nil || len(removed) != 0 {
		t.Errorf("Prune by age: %+v %v", removed, err)
	}

	gone, err := s.PruneDamaged()
	if err != nil || len(gone) != 1 || gone[0].Path != bad {
		t.Fatalf("PruneDamaged: %+v %v", gone, err)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("damaged manifest left: %v", err)
	}
	if _, err := os.Stat(oldBlob); !os.IsNotExist(err) {
		t.Errorf("the blob only the damaged manifest named is left: %v", err)
	}
	all, err := s.List()
	if err != nil || len(all) != 2 {
		t.Fatalf("after PruneDamaged: %+v %v", all, err)
	}
	for _, sn := range all {
		if _, err := s.Load(&sn); err != nil {
			t.Errorf("a kept snapshot lost its blob: %v", err)
		}
	}
	if d, err := s.Damaged(); err != nil || len(d) != 0 {
		t.Errorf("still damaged: %+v %v", d, err)
	}
	if gone, err := s.PruneDamaged(); err != nil || len(gone) != 0 {
		t.Errorf("second PruneDamaged: %+v %v", gone, err)
	}
}

func TestDamageKinds(t *testing.T) {
	s, err := snapshot.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := create(t, s, "good", "")
	b, _ := os.ReadFile(manifestPath(t, s, good))
	mdir := filepath.Join(s.Dir(), "manifests")
	cases := map[string]string{
		"empty":     "",
		"truncated": string(b[:len(b)-3]),
		"not-json":  "\x00\x00\x00\x00",
		"edited-id": strings.Replace(string(b), good.ID, "0123456789abcdef", 1),
		"bad-hash":  strings.Replace(string(b), good.Plugins["hostname"], "../../../etc/passwd", 1),
		"no-time":   `{"id":"` + good.ID + `","plugins":{"hostname":"` + good.Plugins["hostname"] + `"}}`,
		"array":     `[]`,
		"trailing":  string(b) + "{}",
	}
	for name, content := range cases {
		if err := os.WriteFile(filepath.Join(mdir, "20200101T000000.000000000Z-"+name+".json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.List()
	if err != nil || len(all) != 1 || all[0].ID != good.ID {
		t.Fatalf("List: %+v %v", all, err)
	}
	dmg, err := s.Damaged()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, d := range dmg {
		found[strings.TrimSuffix(filepath.Base(d.Path)[len("20200101T000000.000000000Z-"):], ".json")] = d.Reason
	}
	for name := range cases {
		if found[name] == "" {
			t.Errorf("%s: not reported as damaged (%v)", name, found)
		}
	}
	t.Logf("reasons: %v", found)
}

func TestOpenRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := snapshot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sn := create(t, s, "a", "")
	// What a kill during `snapshot create` leaves: atomicfile's temporary
	// files, next to a finished blob and manifest.
	temps := []string{
		filepath.Join(dir, "blobs", ".0123.json.tmp-123456"),
		filepath.Join(dir, "manifests", "."+filepath.Base(manifestPath(t, s, sn))+".tmp-98765"),
	}
	for _, p := range temps {
		if err := os.WriteFile(p, []byte(`{"half`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(dir, "manifests", "notes.txt")
	if err := os.WriteFile(other, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}

	// While a writer holds the store, its temporary files are its own.
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Open(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range temps {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Open removed %s while a writer held the store", p)
		}
	}
	f.Close()

	s, err = snapshot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range temps {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after Open: %v", p, err)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("Open removed a file that is not its own: %v", err)
	}
	all, err := s.List()
	if err != nil || len(all) != 1 {
		t.Fatalf("List: %+v %v", all, err)
	}
	if d, _ := s.Damaged(); len(d) != 0 {
		t.Errorf("damaged: %+v", d)
	}
	if _, err := s.Load(&all[0]); err != nil {
		t.Error(err)
	}
}
