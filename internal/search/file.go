package search

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cespare/xxhash/v2"
)

// FormatVersion is the index file format this op-dbus writes and reads.
// An index of another version is rebuilt, never read.
const FormatVersion = 1

const indexMagic = "OPDBSIX\x00"

// File names below the search directory (STATE-DIR/search).
const (
	IndexFile  = "index.bin"
	VectorFile = "vectors.bin"
)

// Errors of reading an index file.
var (
	ErrNoIndex   = errors.New("no search index")
	ErrOldFormat = errors.New("index file of another format version")
	ErrCorrupt   = errors.New("index file is corrupt")
)

// Meta is what an index was built from and with.
type Meta struct {
	Version   int            `json:"version"`
	Built     time.Time      `json:"built"`
	Updated   time.Time      `json:"updated"`
	Embedder  string         `json:"embedder"`
	Config    EmbedderConfig `json:"embedder_config"`
	Selection Selection      `json:"selection"`
}

// EmbedderConfig says how to make the index's embedder again (the API key
// is never stored: it comes from the environment).
type EmbedderConfig struct {
	Kind  string `json:"kind"` // "builtin" or "openai"
	URL   string `json:"url,omitempty"`
	Model string `json:"model,omitempty"`
	Dim   int    `json:"dim,omitempty"`
}

// Selection is what `index build` indexed; `index update` indexes the same.
type Selection struct {
	// Buses are the buses walked (system, session, addresses), in order.
	Buses []string `json:"buses,omitempty"`
	// DefaultBuses: no --bus was given; the first bus is required, the
	// others were taken when reachable, and `index update` does the same.
	DefaultBuses bool `json:"default_buses,omitempty"`
	// Bus is the one bus of an index built before Buses existed (read
	// only as Buses[0]; written as Buses[0] for older op-dbus).
	Bus         string   `json:"bus,omitempty"`
	Services    []string `json:"services,omitempty"`
	Activatable bool     `json:"activatable,omitempty"`
	NoBus       bool     `json:"no_bus,omitempty"`
	NoPlugins   bool     `json:"no_plugins,omitempty"`
	NoAudit     bool     `json:"no_audit,omitempty"`
	User        bool     `json:"user,omitempty"`
	StateDir    string   `json:"state_dir,omitempty"`
}

// BusList is the buses selected: Buses, or the one Bus of an older index.
func (s Selection) BusList() []string {
	if len(s.Buses) == 0 && s.Bus != "" && !s.NoBus {
		return []string{s.Bus}
	}
	return s.Buses
}

// Header layout: magic (8), version u32, reserved u32, body length u64,
// xxhash64 of the body u64. The body: meta as JSON (uvarint length), a
// uvarint document count, then per document its seven strings (uvarint
// length + bytes): ID, Kind, Name, Context, Text, Open, Source.
const indexHeader = 32

// MaxIndexFile bounds the index file read into memory.
const MaxIndexFile = 4 << 30

// EncodeIndex writes the index file image.
func EncodeIndex(w io.Writer, meta Meta, docs []Document) error {
	var body []byte
	mj, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	body = binary.AppendUvarint(body, uint64(len(mj)))
	body = append(body, mj...)
	body = binary.AppendUvarint(body, uint64(len(docs)))
	for i := range docs {
		d := &docs[i]
		for _, s := range []string{d.ID, d.Kind, d.Name, d.Context, d.Text, d.Open, d.Source} {
			body = binary.AppendUvarint(body, uint64(len(s)))
			body = append(body, s...)
		}
	}
	hdr := make([]byte, indexHeader)
	copy(hdr, indexMagic)
	binary.LittleEndian.PutUint32(hdr[8:], FormatVersion)
	binary.LittleEndian.PutUint64(hdr[16:], uint64(len(body)))
	binary.LittleEndian.PutUint64(hdr[24:], xxhash.Sum64(body))
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	_, err = w.Write(body)
	return err
}

// DecodeIndex reads an index file image. It never panics, whatever data
// holds (it is fuzzed): a bad file is ErrCorrupt, another version
// ErrOldFormat.
func DecodeIndex(data []byte) (Meta, []Document, error) {
	var meta Meta
	if len(data) < indexHeader || string(data[:8]) != indexMagic {
		return meta, nil, fmt.Errorf("%w: not an op-dbus search index", ErrCorrupt)
	}
	if v := binary.LittleEndian.Uint32(data[8:]); v != FormatVersion {
		return meta, nil, fmt.Errorf("%w: version %d, this op-dbus reads version %d", ErrOldFormat, v, FormatVersion)
	}
	n := binary.LittleEndian.Uint64(data[16:])
	body := data[indexHeader:]
	if n != uint64(len(body)) {
		return meta, nil, fmt.Errorf("%w: body is %d bytes, the header says %d (cut short?)", ErrCorrupt, len(body), n)
	}
	if xxhash.Sum64(body) != binary.LittleEndian.Uint64(data[24:]) {
		return meta, nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	r := &reader{b: body}
	mj := r.bytes()
	if r.err == nil {
		if err := json.Unmarshal(mj, &meta); err != nil {
			return meta, nil, fmt.Errorf("%w: meta: %v", ErrCorrupt, err)
		}
	}
	count := r.uvarint()
	if r.err == nil && count > uint64(len(body))/7 {
		r.err = errors.New("document count larger than the file")
	}
	var docs []Document
	if r.err == nil {
		docs = make([]Document, 0, count)
	}
	for i := uint64(0); r.err == nil && i < count; i++ {
		d := Document{ID: r.str(), Kind: r.str(), Name: r.str(), Context: r.str(), Text: r.str(), Open: r.str(), Source: r.str()}
		docs = append(docs, d)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes after the last document", len(r.b))
	}
	if r.err != nil {
		return meta, nil, fmt.Errorf("%w: %v", ErrCorrupt, r.err)
	}
	if meta.Version != FormatVersion {
		return meta, nil, fmt.Errorf("%w: meta version %d", ErrOldFormat, meta.Version)
	}
	return meta, docs, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("bad length")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errors.New("string runs past the end")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *reader) str() string { return string(r.bytes()) }

// SaveFile writes the index's documents and meta to path atomically
// (vectors live in the cache file beside it).
func (ix *Index) SaveFile(path string) error {
	ix.mu.RLock()
	meta := ix.Meta
	docs := ix.docs
	err := func() error {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), ".index-*")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		w := bufio.NewWriterSize(tmp, 1<<20)
		if err := EncodeIndex(w, meta, docs); err != nil {
			tmp.Close()
			return err
		}
		if err := w.Flush(); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		return os.Rename(tmp.Name(), path)
	}()
	ix.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("search index %s: %w", path, err)
	}
	return nil
}

// ReadFile reads an index file: ErrNoIndex when there is none.
func ReadFile(path string) (Meta, []Document, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Meta{}, nil, fmt.Errorf("%w at %s", ErrNoIndex, path)
	}
	if err != nil {
		return Meta{}, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Meta{}, nil, err
	}
	if fi.Size() > MaxIndexFile {
		return Meta{}, nil, fmt.Errorf("%w: %s is %d bytes, over the limit", ErrCorrupt, path, fi.Size())
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return Meta{}, nil, err
	}
	m, d, err := DecodeIndex(data)
	if err != nil {
		return m, nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, d, nil
}

// Load builds an index from documents read from a file: vectors come from
// the cache; documents whose vector was evicted are embedded again
// (counted in the returned Change).
func Load(ctx context.Context, meta Meta, docs []Document, ix *Index) (Change, error) {
	by := map[string][]Document{}
	for _, d := range docs {
		by[d.Source] = append(by[d.Source], d)
	}
	ix.Meta = meta
	return ix.Replace(ctx, by, nil)
}
