package snapshot

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzManifest: a manifest file of any content never panics the store and
// is either one readable snapshot (valid ID, time and blob hashes, which
// round-trip) or one damage report naming the file and the way out; never
// both, never neither.
func FuzzManifest(f *testing.F) {
	s, err := Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	sn, err := s.Create(map[string]any{"hostname": map[string]string{"static_hostname": "h"}, "systemd": map[string]any{"units": map[string]any{}}}, "t", "pre-apply")
	if err != nil {
		f.Fatal(err)
	}
	good, err := json.MarshalIndent(sn, "", "  ")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2]) // truncated, as issue 19 found it
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	f.Add([]byte(`{"id":"0000000000000000","time":"2026-01-01T00:00:00Z","plugins":{"x":"../../etc/passwd"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sn, err := decodeManifest(b)
		if err == nil {
			if !idName.MatchString(sn.ID) || sn.Time.IsZero() || sn.Plugins == nil {
				t.Fatalf("accepted %q as %+v", b, sn)
			}
			for _, h := range sn.Plugins {
				if !blobName.MatchString(h) {
					t.Fatalf("accepted blob name %q", h)
				}
			}
			re, _ := json.Marshal(sn)
			sn2, err := decodeManifest(re)
			if err != nil || sn2.ID != sn.ID || len(sn2.Plugins) != len(sn.Plugins) || !sn2.Time.Equal(sn.Time) {
				t.Fatalf("round trip of %q: %+v %v", b, sn2, err)
			}
		} else if err.Error() == "" {
			t.Fatalf("empty reason for %q", b)
		}

		dir := t.TempDir()
		st, oerr := Open(dir)
		if oerr != nil {
			t.Fatal(oerr)
		}
		p := filepath.Join(dir, "manifests", "20260101T000000.000000000Z-0123456789abcdef.json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		l, serr := st.scan()
		if serr != nil {
			t.Fatal(serr)
		}
		if len(l.good)+len(l.damaged) != 1 || (err == nil) != (len(l.good) == 1) {
			t.Fatalf("%q: %d good, %d damaged, decode error %v", b, len(l.good), len(l.damaged), err)
		}
		if len(l.damaged) == 1 {
			d := l.damaged[0]
			if d.Path != p || d.ID != "0123456789abcdef" || d.Size != int64(len(b)) || !strings.Contains(d.Error(), p) || !strings.Contains(d.Error(), "prune --corrupt") {
				t.Fatalf("damage report %+v: %s", d, d.Error())
			}
		}
	})
}
