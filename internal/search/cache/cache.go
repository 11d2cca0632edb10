// Package cache keeps embedding vectors by content hash in one file of the
// state directory, mapped into memory (mmap) on open so that a hit is a map
// lookup and a slice of the mapping: no read, no copy, no decoding.
//
// File format (little endian), version 1:
//
//	header, 64 bytes:
//	  0  magic "OPDBVEC\x00"
//	  8  format version (u32)      12  dimension (u32)
//	 16  record count (u64)        24  LRU clock at save (u64)
//	 32  xxhash64 of the embedder ID (u64)
//	 40  reserved (u64)            48  checksum (u64)   56  reserved
//	records, count × (16 + 4·dim) bytes:
//	  key (u64: xxhash64 of the embedded text), last use (u64), dim × f32
//
// The checksum is xxhash64 over header bytes 0..48 and every record. A
// file with a wrong magic, an older or newer version, another dimension or
// embedder, a bad length or a bad checksum is not used: the cache starts
// empty and says why (Rebuilt); the next Save replaces the file. The
// cache is bounded by MaxBytes: Save keeps the most recently used records
// that fit (LRU eviction by size).
package cache

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// Version is the file format version this package writes and reads.
const Version = 1

const (
	magic      = "OPDBVEC\x00"
	headerSize = 64
)

// DefaultMaxBytes bounds a cache file unless told otherwise.
const DefaultMaxBytes = 512 << 20

// Key returns the cache key of a text: xxhash64, fast, stable across
// processes and machines (not for security: collisions are possible in
// principle and would only serve a near-identical text's vector).
func Key(text string) uint64 { return xxhash.Sum64String(text) }

// Stats count what the cache did since it was opened.
type Stats struct {
	Entries   int   `json:"entries"`
	Bytes     int64 `json:"bytes"`
	MaxBytes  int64 `json:"max_bytes"`
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Evictions int64 `json:"evictions"`
	Mapped    int64 `json:"mapped_bytes"`
}

// Cache maps content hashes to vectors. Safe for concurrent use.
type Cache struct {
	path       string
	dim        int
	embedderID string
	// MaxBytes bounds the file Save writes.
	MaxBytes int64
	// Rebuilt says why an existing file was not used ("" when it was, or
	// when there was none).
	Rebuilt string

	mu    sync.Mutex
	mm    []byte
	recs  map[uint64]int // key → record index in mm
	used  []uint64       // last use per mm record (clock)
	fresh map[uint64]*entry
	clock uint64
	st    Stats
	old   [][]byte // earlier mappings, unmapped by Close
}

type entry struct {
	v    []float32
	used uint64
}

// RecordSize is the size of one record of dim floats.
func RecordSize(dim int) int { return 16 + 4*dim }

// Open maps the cache file at path for vectors of dim floats made by the
// embedder named embedderID. A missing file is an empty cache; an unusable
// one (see the package doc) is an empty cache with Rebuilt set. Errors are
// only for what cannot be worked around (the directory cannot be read).
func Open(path string, dim int, embedderID string, maxBytes int64) (*Cache, error) {
	if dim <= 0 {
		return nil, fmt.Errorf("embedding cache: dimension %d", dim)
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	c := &Cache{path: path, dim: dim, embedderID: embedderID, MaxBytes: maxBytes,
		recs: map[uint64]int{}, fresh: map[uint64]*entry{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("embedding cache: %w", err)
	}
	if fi.Size() == 0 {
		c.Rebuilt = "empty file"
		return c, nil
	}
	if fi.Size() > math.MaxInt32*int64(RecordSize(dim)) || fi.Size() < 0 {
		c.Rebuilt = "file too large"
		return c, nil
	}
	mm, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("embedding cache: mmap %s: %w", path, err)
	}
	recs, used, clock, err := Decode(mm, dim, embedderID)
	if err != nil {
		_ = syscall.Munmap(mm)
		c.Rebuilt = err.Error()
		return c, nil
	}
	c.mm, c.recs, c.used, c.clock = mm, recs, used, clock
	return c, nil
}

// Decode checks a cache file image and indexes its records. It never
// panics, whatever data holds (it is fuzzed).
func Decode(data []byte, dim int, embedderID string) (recs map[uint64]int, used []uint64, clock uint64, err error) {
	if len(data) < headerSize {
		return nil, nil, 0, fmt.Errorf("file of %d bytes is shorter than the header", len(data))
	}
	if string(data[:8]) != magic {
		return nil, nil, 0, errors.New("not an op-dbus embedding cache (bad magic)")
	}
	le := binary.LittleEndian
	if v := le.Uint32(data[8:]); v != Version {
		return nil, nil, 0, fmt.Errorf("format version %d, this op-dbus reads version %d", v, Version)
	}
	if d := le.Uint32(data[12:]); int(d) != dim {
		return nil, nil, 0, fmt.Errorf("vectors of dimension %d, the embedder makes %d", d, dim)
	}
	if h := le.Uint64(data[32:]); h != xxhash.Sum64String(embedderID) {
		return nil, nil, 0, errors.New("made by another embedder")
	}
	n := le.Uint64(data[16:])
	rs := uint64(RecordSize(dim))
	if n > uint64(len(data))/rs || uint64(headerSize)+n*rs != uint64(len(data)) {
		return nil, nil, 0, fmt.Errorf("length %d does not match %d records", len(data), n)
	}
	d := xxhash.New()
	_, _ = d.Write(data[:48])
	_, _ = d.Write(data[headerSize:])
	if d.Sum64() != le.Uint64(data[48:]) {
		return nil, nil, 0, errors.New("checksum mismatch (corrupt file)")
	}
	clock = le.Uint64(data[24:])
	recs = make(map[uint64]int, n)
	used = make([]uint64, n)
	for i := uint64(0); i < n; i++ {
		off := headerSize + i*rs
		recs[le.Uint64(data[off:])] = int(i)
		used[i] = le.Uint64(data[off+8:])
	}
	return recs, used, clock, nil
}

// vecAt returns record i's vector, pointing into the mapping.
func (c *Cache) vecAt(i int) []float32 {
	off := headerSize + i*RecordSize(c.dim) + 16
	return unsafe.Slice((*float32)(unsafe.Pointer(&c.mm[off])), c.dim)
}

// Get returns the vector cached for key. The slice may point into the
// read-only mapping: never write to it.
func (c *Cache) Get(key uint64) ([]float32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	if e, ok := c.fresh[key]; ok {
		e.used = c.clock
		c.st.Hits++
		return e.v, true
	}
	if i, ok := c.recs[key]; ok {
		c.used[i] = c.clock
		c.st.Hits++
		return c.vecAt(i), true
	}
	c.st.Misses++
	return nil, false
}

// Put stores v (of the cache's dimension) under key.
func (c *Cache) Put(key uint64, v []float32) error {
	if len(v) != c.dim {
		return fmt.Errorf("embedding cache: vector of dimension %d, the cache holds %d", len(v), c.dim)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock++
	c.fresh[key] = &entry{v: v, used: c.clock}
	return nil
}

// Len is the number of cached vectors.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lenLocked()
}

func (c *Cache) lenLocked() int {
	n := len(c.fresh)
	for k := range c.recs {
		if _, dup := c.fresh[k]; !dup {
			n++
		}
	}
	return n
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.Entries = c.lenLocked()
	s.Bytes = int64(headerSize + s.Entries*RecordSize(c.dim))
	s.MaxBytes = c.MaxBytes
	s.Mapped = int64(len(c.mm))
	return s
}

// Save writes every vector, most recently used first, up to MaxBytes (the
// rest is evicted), to a new file that replaces the old one atomically,
// and maps the new file. Vectors handed out before stay valid (the old
// mapping is kept until Close).
func (c *Cache) Save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	type rec struct {
		key  uint64
		used uint64
		v    []float32
	}
	all := make([]rec, 0, len(c.recs)+len(c.fresh))
	for k, e := range c.fresh {
		all = append(all, rec{k, e.used, e.v})
	}
	for k, i := range c.recs {
		if _, dup := c.fresh[k]; !dup {
			all = append(all, rec{k, c.used[i], c.vecAt(i)})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].used != all[j].used {
			return all[i].used > all[j].used
		}
		return all[i].key < all[j].key
	})
	rs := RecordSize(c.dim)
	keep := int((c.MaxBytes - headerSize) / int64(rs))
	if keep < 0 {
		keep = 0
	}
	if len(all) > keep {
		c.st.Evictions += int64(len(all) - keep)
		all = all[:keep]
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("embedding cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), ".vectors-*")
	if err != nil {
		return fmt.Errorf("embedding cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	le := binary.LittleEndian
	hdr := make([]byte, headerSize)
	copy(hdr, magic)
	le.PutUint32(hdr[8:], Version)
	le.PutUint32(hdr[12:], uint32(c.dim))
	le.PutUint64(hdr[16:], uint64(len(all)))
	le.PutUint64(hdr[24:], c.clock)
	le.PutUint64(hdr[32:], xxhash.Sum64String(c.embedderID))
	d := xxhash.New()
	_, _ = d.Write(hdr[:48])
	w := bufio.NewWriterSize(tmp, 1<<20)
	// header is written last (its checksum needs every record)
	if _, err := w.Write(make([]byte, headerSize)); err != nil {
		tmp.Close()
		return fmt.Errorf("embedding cache: %w", err)
	}
	buf := make([]byte, rs)
	for _, r := range all {
		le.PutUint64(buf, r.key)
		le.PutUint64(buf[8:], r.used)
		for j, x := range r.v {
			le.PutUint32(buf[16+4*j:], math.Float32bits(x))
		}
		_, _ = d.Write(buf)
		if _, err := w.Write(buf); err != nil {
			tmp.Close()
			return fmt.Errorf("embedding cache: %w", err)
		}
	}
	le.PutUint64(hdr[48:], d.Sum64())
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("embedding cache: %w", err)
	}
	if _, err := tmp.WriteAt(hdr, 0); err != nil {
		tmp.Close()
		return fmt.Errorf("embedding cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("embedding cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("embedding cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("embedding cache: %w", err)
	}
	c.Rebuilt = ""
	// Map the new file; vectors handed out from the old mapping or from
	// fresh stay valid because neither is unmapped or changed here.
	f, err := os.Open(c.path)
	if err != nil {
		return fmt.Errorf("embedding cache: %w", err)
	}
	defer f.Close()
	size := headerSize + len(all)*rs
	var mm []byte
	if len(all) > 0 {
		mm, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("embedding cache: mmap: %w", err)
		}
	}
	if c.mm != nil {
		c.old = append(c.old, c.mm)
	}
	c.mm = mm
	c.recs = make(map[uint64]int, len(all))
	c.used = make([]uint64, len(all))
	for i, r := range all {
		c.recs[r.key] = i
		c.used[i] = r.used
	}
	c.fresh = map[uint64]*entry{}
	return nil
}

// Close unmaps the file. Vectors from Get must not be used afterwards.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for _, m := range append(c.old, c.mm) {
		if m != nil {
			if err := syscall.Munmap(m); err != nil && first == nil {
				first = err
			}
		}
	}
	c.mm, c.old = nil, nil
	c.recs = map[uint64]int{}
	c.used = nil
	return first
}
