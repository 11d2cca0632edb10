package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Damaged is a manifest that cannot be read as a snapshot: truncated by a
// crash of a process that wrote it in place, edited by hand, or hit by a
// disk error. It is never removed silently: List leaves it out, Prune
// neither counts nor removes it (nor the blobs its text still names), and
// only PruneDamaged (`op-dbus snapshot prune --corrupt`) removes it.
type Damaged struct {
	// Path is the manifest file.
	Path string `json:"path"`
	// ID is the snapshot ID its file name carries, when it has one.
	ID string `json:"id,omitempty"`
	// Reason says what is wrong with it.
	Reason string `json:"reason"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
}

// ErrDamaged is what every Damaged error wraps: front ends test for it
// with errors.Is and take the file from errors.As(err, *Damaged).
var ErrDamaged = errors.New("snapshot manifest is damaged")

func (d Damaged) Error() string {
	return fmt.Sprintf("snapshot manifest %s is damaged (%s): `op-dbus snapshot prune --corrupt` removes it", d.Path, d.Reason)
}

// Unwrap makes errors.Is(err, ErrDamaged) true.
func (d Damaged) Unwrap() error { return ErrDamaged }

// manifest is a readable manifest and its file name.
type manifest struct {
	name string
	sn   Snapshot
}

// listing is one read of the manifests directory.
type listing struct {
	good    []manifest // oldest first
	damaged []Damaged  // file name order
	// pinned holds the blob hashes the damaged manifests' text still
	// names, which garbage collection keeps.
	pinned map[string]bool
}

func (l *listing) snapshots() []Snapshot {
	var out []Snapshot
	for _, m := range l.good {
		out = append(out, m.sn)
	}
	return out
}

var (
	blobName     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	idName       = regexp.MustCompile(`^[0-9a-f]{16}$`)
	hashInText   = regexp.MustCompile(`[0-9a-f]{64}`)
	manifestName = regexp.MustCompile(`^\d{8}T\d{6}\.\d{9}Z-([0-9a-f]{16})\.json$`)
)

// scan reads every manifest. Only a failure to read the directory itself
// is an error; a manifest that cannot be read or decoded is reported in
// damaged.
func (s *Store) scan() (*listing, error) {
	dir := filepath.Join(s.dir, "manifests")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot store %s: %w", s.dir, err)
	}
	l := &listing{pinned: map[string]bool{}}
	for _, e := range ents {
		if e.IsDir() || isTemp(e.Name()) || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err == nil {
			var sn Snapshot
			if sn, err = decodeManifest(b); err == nil {
				l.good = append(l.good, manifest{name: e.Name(), sn: sn})
				continue
			}
		}
		d := Damaged{Path: p, Reason: err.Error(), Size: int64(len(b))}
		if m := manifestName.FindStringSubmatch(e.Name()); m != nil {
			d.ID = m[1]
		}
		if fi, serr := e.Info(); serr == nil {
			d.Size = fi.Size()
		}
		for _, h := range hashInText.FindAllString(string(b), -1) {
			l.pinned[h] = true
		}
		l.damaged = append(l.damaged, d)
	}
	sort.SliceStable(l.good, func(i, j int) bool { return l.good[i].sn.Time.Before(l.good[j].sn.Time) })
	return l, nil
}

// decodeManifest decodes and checks a manifest: it must be one JSON object
// with a time, every plugin's blob named by a SHA-256, and the ID that
// Create derives from those blobs. Unknown fields are allowed, so a newer
// op-dbus's manifests are not taken for damaged ones.
func decodeManifest(b []byte) (Snapshot, error) {
	var sn Snapshot
	if len(b) == 0 {
		return sn, errors.New("empty file")
	}
	if err := json.Unmarshal(b, &sn); err != nil {
		return Snapshot{}, fmt.Errorf("not a JSON manifest: %v", err)
	}
	if sn.Time.IsZero() {
		return Snapshot{}, errors.New("no time")
	}
	if !idName.MatchString(sn.ID) {
		return Snapshot{}, fmt.Errorf("id %q is not 16 hex digits", sn.ID)
	}
	names := make([]string, 0, len(sn.Plugins))
	for n, h := range sn.Plugins {
		if !blobName.MatchString(h) {
			return Snapshot{}, fmt.Errorf("plugin %q: blob %q is not a SHA-256", n, h)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	idh := sha256.New()
	for _, n := range names {
		fmt.Fprintf(idh, "%s %s\n", n, sn.Plugins[n])
	}
	if id := hex.EncodeToString(idh.Sum(nil))[:16]; id != sn.ID {
		return Snapshot{}, fmt.Errorf("id %s does not match its plugins' blobs (want %s)", sn.ID, id)
	}
	if sn.Plugins == nil {
		sn.Plugins = map[string]string{}
	}
	return sn, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
