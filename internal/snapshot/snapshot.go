// Package snapshot stores queried host states, content-addressed and
// deduplicated: each plugin's state is a blob named by its SHA-256, and a
// snapshot is a small manifest naming one blob per plugin. An unchanged
// second snapshot adds a manifest of a few hundred bytes and no blob.
// Where the state directory is a btrfs subvolume, a read-only btrfs
// snapshot of it is taken as well (see btrfs.go).
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/op-dbus/op-dbus/internal/atomicfile"
)

// Snapshot is one captured state.
type Snapshot struct {
	// ID is the content address of the manifest's plugin blobs: the same
	// state always has the same ID.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Tag  string    `json:"tag,omitempty"`
	// Reason says why it was taken ("manual", "pre-apply", ...).
	Reason string `json:"reason,omitempty"`
	// Plugins maps a plugin name to the hash of its state blob.
	Plugins map[string]string `json:"plugins"`
	// Btrfs is the path of the read-only btrfs snapshot, when one was taken.
	Btrfs string `json:"btrfs,omitempty"`
}

// Store is a snapshot directory: DIR/blobs/<hash>.json and
// DIR/manifests/<time>-<id>.json. Writers serialize on DIR/.lock (see
// lock): Create holds it shared, whatever removes files holds it
// exclusively.
type Store struct {
	dir string
}

// Open creates the store's directories if needed and removes the temporary
// files a writer killed mid-write left behind (atomicfile's
// .<name>.tmp-*): they are never part of a snapshot. While another process
// is writing the store (or where the store is read-only), the sweep is
// left to a later Open.
func Open(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "blobs"), filepath.Join(dir, "manifests")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("snapshot store %s: %w", dir, err)
		}
	}
	s := &Store{dir: dir}
	if unlock, ok := s.tryLock(); ok {
		defer unlock()
		s.sweepTemp()
	}
	return s, nil
}

// sweepTemp removes leftover temporary files; the caller holds the lock
// exclusively, so no writer owns them.
func (s *Store) sweepTemp() {
	for _, sub := range []string{"blobs", "manifests"} {
		d := filepath.Join(s.dir, sub)
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if isTemp(e.Name()) && !e.IsDir() {
				_ = os.Remove(filepath.Join(d, e.Name()))
			}
		}
	}
}

// isTemp reports whether name is an atomicfile temporary file.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Create stores states (plugin name → typed state, marshalled as JSON) and
// returns the snapshot.
func (s *Store) Create(states map[string]any, tag, reason string) (*Snapshot, error) {
	unlock, err := s.lock(syscall.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer unlock()
	snap := &Snapshot{Time: time.Now().UTC(), Tag: tag, Reason: reason, Plugins: map[string]string{}}
	names := slices.Sorted(maps.Keys(states))
	idh := sha256.New()
	for _, n := range names {
		b, err := canonical(states[n])
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", n, err)
		}
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := s.writeBlob(h, b); err != nil {
			return nil, err
		}
		snap.Plugins[n] = h
		fmt.Fprintf(idh, "%s %s\n", n, h)
	}
	snap.ID = hex.EncodeToString(idh.Sum(nil))[:16]
	mb, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%s.json", snap.Time.Format("20060102T150405.000000000Z"), snap.ID)
	if err := atomicfile.Write(filepath.Join(s.dir, "manifests", name), mb, 0o600); err != nil {
		return nil, err
	}
	return snap, nil
}

// canonical marshals with sorted keys: struct → generic → JSON.
func canonical(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var g any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&g); err != nil {
		return nil, err
	}
	return json.Marshal(g)
}

func (s *Store) writeBlob(hash string, b []byte) error {
	p := filepath.Join(s.dir, "blobs", hash+".json")
	if _, err := os.Stat(p); err == nil {
		return nil // deduplicated
	}
	return atomicfile.Write(p, b, 0o600)
}

// List returns every readable snapshot, oldest first. A damaged manifest
// does not fail it: it is left out, and Damaged names it.
func (s *Store) List() ([]Snapshot, error) {
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	return l.snapshots(), nil
}

// Damaged returns the manifests that cannot be read as snapshots, in file
// name (time) order.
func (s *Store) Damaged() ([]Damaged, error) {
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	return l.damaged, nil
}

// ErrNotFound is returned for an unknown snapshot ID.
var ErrNotFound = errors.New("no such snapshot")

// Get finds a snapshot by ID or unique ID prefix (the newest if the same
// state was captured more than once), or by tag.
func (s *Store) Get(ref string) (*Snapshot, error) {
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	all := l.snapshots()
	var match *Snapshot
	ids := map[string]bool{}
	for i := len(all) - 1; i >= 0; i-- {
		sn := all[i]
		if sn.Tag == ref || strings.HasPrefix(sn.ID, ref) && len(ref) >= 4 {
			if match == nil {
				match = &all[i]
			}
			ids[sn.ID] = true
		}
	}
	if match == nil {
		for _, d := range l.damaged {
			if len(ref) >= 4 && strings.HasPrefix(d.ID, ref) {
				return nil, fmt.Errorf("snapshot %q: %w", ref, d)
			}
		}
		if n := len(l.damaged); n > 0 {
			return nil, fmt.Errorf("%w %q (see `op-dbus snapshot list`; %d damaged %s could not be read: `op-dbus snapshot prune --corrupt --dry-run` lists them)",
				ErrNotFound, ref, n, plural(n, "manifest", "manifests"))
		}
		return nil, fmt.Errorf("%w %q (see `op-dbus snapshot list`)", ErrNotFound, ref)
	}
	if len(ids) > 1 {
		return nil, fmt.Errorf("snapshot %q is ambiguous: matches %d snapshots; give more of the ID", ref, len(ids))
	}
	return match, nil
}

// Load returns the raw JSON state of each plugin of a snapshot, checking
// every blob against its hash.
func (s *Store) Load(sn *Snapshot) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for n, h := range sn.Plugins {
		b, err := os.ReadFile(filepath.Join(s.dir, "blobs", h+".json"))
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: plugin %s: %w", sn.ID, n, err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != h {
			return nil, fmt.Errorf("snapshot %s: plugin %s: blob %s does not match its hash (corrupt)", sn.ID, n, h)
		}
		out[n] = b
	}
	return out, nil
}

// Prune removes snapshots beyond the newest keep (0: no limit) and those
// older than maxAge (0: no limit), then every blob no snapshot names. It
// returns the removed snapshots, whose IDs and hashes the caller records,
// also with an error part way (those removed so far). Damaged manifests neither count towards keep nor are removed, and the
// blobs their text still names are kept: only PruneDamaged removes them.
func (s *Store) Prune(keep int, maxAge time.Duration, now time.Time) ([]Snapshot, error) {
	unlock, err := s.lock(syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	var removed []Snapshot
	var kept []manifest
	for i, m := range l.good {
		old := maxAge > 0 && now.Sub(m.sn.Time) > maxAge
		excess := keep > 0 && len(l.good)-i > keep
		if old || excess {
			if err := os.Remove(filepath.Join(s.dir, "manifests", m.name)); err != nil && !os.IsNotExist(err) {
				return removed, err
			}
			removed = append(removed, m.sn)
		} else {
			kept = append(kept, m)
		}
	}
	if len(removed) == 0 {
		return nil, nil
	}
	_ = atomicfile.SyncDir(filepath.Join(s.dir, "manifests"))
	return removed, s.collect(kept, l.pinned)
}

// PruneDamaged removes every damaged manifest, then the blobs no readable
// snapshot names, and returns the manifests it removed.
func (s *Store) PruneDamaged() ([]Damaged, error) {
	unlock, err := s.lock(syscall.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer unlock()
	l, err := s.scan()
	if err != nil {
		return nil, err
	}
	var removed []Damaged
	for _, d := range l.damaged {
		if err := os.Remove(d.Path); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("remove damaged snapshot manifest %s: %w", d.Path, err)
		}
		removed = append(removed, d)
	}
	if len(removed) == 0 {
		return nil, nil
	}
	_ = atomicfile.SyncDir(filepath.Join(s.dir, "manifests"))
	return removed, s.collect(l.good, nil)
}

// collect removes every blob that neither a kept manifest nor pinned
// names. The caller holds the lock exclusively.
func (s *Store) collect(kept []manifest, pinned map[string]bool) error {
	used := map[string]bool{}
	for _, m := range kept {
		for _, h := range m.sn.Plugins {
			used[h] = true
		}
	}
	blobs, err := os.ReadDir(filepath.Join(s.dir, "blobs"))
	if err != nil {
		return err
	}
	for _, b := range blobs {
		h, ok := strings.CutSuffix(b.Name(), ".json")
		if ok && blobName.MatchString(h) && !used[h] && !pinned[h] {
			_ = os.Remove(filepath.Join(s.dir, "blobs", b.Name()))
		}
	}
	return nil
}

// Usage is the bytes the store occupies.
func (s *Store) Usage() (int64, error) {
	var n int64
	err := filepath.WalkDir(s.dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}
