// Package state holds the state document: its strict decoding (every problem
// named by its path), its canonical form and hash, and its JSON Schema.
package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Version is the only document version this build reads.
const Version = 1

// MaxSize bounds a state document. Real host documents are kilobytes to a
// few megabytes; anything larger is a mistake (a log, an image) and is
// refused before parsing.
const MaxSize = 16 << 20

// Types maps a plugin name to a constructor of its typed state.
type Types map[string]func() any

// Validator checks plugin rules beyond the Go types; returned problems name
// paths relative to the plugin key (`units["a b.service"]`).
type Validator func(plugin string, state any) Problems

// Document is a decoded, typed state document.
type Document struct {
	Version int
	// Plugins maps a plugin name to a pointer to its typed state.
	Plugins map[string]any
}

// Problem is one thing wrong with a document, at a path such as
// `plugins.systemd.units["nginx.service"].enabeld`.
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) Error() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Problems is every problem found in one document.
type Problems []Problem

func (ps Problems) Error() string {
	if len(ps) == 0 {
		return "no problems"
	}
	if len(ps) == 1 {
		return ps[0].Error()
	}
	return fmt.Sprintf("%s (and %d more problems; `op-dbus validate` lists them all)", ps[0].Error(), len(ps)-1)
}

// ReadFile reads a document from path ("-" is stdin) with the size, type and
// encoding checks every command shares.
func ReadFile(path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, MaxSize+1))
		if err != nil {
			return nil, fmt.Errorf("read state from stdin: %w", err)
		}
		if len(b) > MaxSize {
			return nil, fmt.Errorf("stdin: state document larger than the %d MiB limit", MaxSize>>20)
		}
		return b, nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such file (give the path of a state document, or - for stdin)", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a state document", path)
	}
	if fi.Size() > MaxSize {
		return nil, fmt.Errorf("%s: %.1f MiB is larger than the %d MiB limit for a state document", path, float64(fi.Size())/(1<<20), MaxSize>>20)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s: larger than the %d MiB limit for a state document", path, MaxSize>>20)
	}
	return b, nil
}

// Format is how a document is written.
type Format int

const (
	FormatAuto Format = iota
	FormatJSON
	FormatYAML
)

// FormatFor picks the format from a file name; unknown names are sniffed.
func FormatFor(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return FormatJSON
	case ".yaml", ".yml":
		return FormatYAML
	}
	return FormatAuto
}

// Load reads and decodes a document file.
func Load(path string, types Types, validate Validator) (*Document, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := Decode(b, FormatFor(path), types, validate)
	if err != nil {
		var ps Problems
		if errors.As(err, &ps) {
			return nil, fmt.Errorf("%s: %w", displayName(path), ps)
		}
		return nil, fmt.Errorf("%s: %w", displayName(path), err)
	}
	return doc, nil
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// Decode parses and strictly checks a document. On failure the error is (or,
// for unparsable input, wraps) a Problems listing everything found; for JSON
// that internal/strictjson refused it also wraps the *strictjson.Error.
func Decode(data []byte, format Format, types Types, validate Validator) (*Document, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, Problems{{Msg: "empty document (expected {\"version\": 1, \"plugins\": {...}})"}}
	}
	if !utf8.Valid(data) {
		off := invalidUTF8Offset(data)
		return nil, Problems{{Msg: fmt.Sprintf("not valid UTF-8 (first bad byte at offset %d); state documents are UTF-8 text", off)}}
	}
	if format == FormatAuto {
		format = sniff(data)
	}
	var tree any
	var err error
	switch format {
	case FormatJSON:
		tree, err = parseJSON(data)
	default:
		tree, err = parseYAML(data)
	}
	if err != nil {
		return nil, parseError{Problems{{Msg: err.Error()}}, err}
	}
	return fromTree(tree, types, validate)
}

// parseError is a document that could not be parsed: Problems like every
// other refusal, and the cause, which for JSON wraps the *strictjson.Error
// (front ends answer a duplicate key by its kind).
type parseError struct {
	Problems
	cause error
}

func (e parseError) Unwrap() []error { return []error{e.Problems, e.cause} }

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

func sniff(data []byte) Format {
	t := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return FormatJSON
	}
	return FormatYAML
}

// fromTree checks a generic tree against the document shape and the plugin
// types, then decodes each plugin's part into its typed struct.
func fromTree(tree any, types Types, validate Validator) (*Document, error) {
	var ps Problems
	root, ok := tree.(map[string]any)
	if !ok {
		return nil, Problems{{Msg: fmt.Sprintf("document must be an object with \"version\" and \"plugins\", got %s", kindOf(tree))}}
	}
	doc := &Document{Plugins: map[string]any{}}
	keys := slices.Sorted(maps.Keys(root))
	for _, k := range keys {
		if k != "version" && k != "plugins" && k != "errors" && k != "unavailable" {
			ps = append(ps, Problem{Path: k, Msg: "unknown field" + suggest(k, []string{"version", "plugins"})})
		}
	}
	v, ok := root["version"]
	if !ok {
		ps = append(ps, Problem{Path: "version", Msg: "missing (add \"version\": 1)"})
	} else if n, ok := versionOf(v); !ok {
		ps = append(ps, Problem{Path: "version", Msg: fmt.Sprintf("must be the number 1, got %s", describe(v))})
	} else if n != Version {
		ps = append(ps, Problem{Path: "version", Msg: fmt.Sprintf("version %d is not supported by this op-dbus (it reads version %d)", n, Version)})
	} else {
		doc.Version = n
	}
	// "errors" and "unavailable" are written by query for plugins it could
	// not read; they are informational and ignored on input, but must have
	// their shape.
	for _, key := range []string{"errors", "unavailable"} {
		raw, ok := root[key]
		if !ok || raw == nil {
			continue
		}
		em, ok := raw.(map[string]any)
		if !ok {
			ps = append(ps, Problem{Path: key, Msg: "expected an object of plugin name to message, got " + kindOf(raw)})
		}
		for _, k := range slices.Sorted(maps.Keys(em)) {
			if _, ok := em[k].(string); !ok {
				ps = append(ps, Problem{Path: fieldPath(key, k), Msg: "expected a string, got " + describe(em[k])})
			}
		}
	}
	if raw, ok := root["plugins"]; ok && raw != nil {
		pm, ok := raw.(map[string]any)
		if !ok {
			ps = append(ps, Problem{Path: "plugins", Msg: "expected an object keyed by plugin name, got " + kindOf(raw)})
		} else {
			known := slices.Sorted(maps.Keys(types))
			for _, name := range slices.Sorted(maps.Keys(pm)) {
				path := "plugins." + name
				mk, ok := types[name]
				if !ok {
					ps = append(ps, Problem{Path: path, Msg: fmt.Sprintf("unknown plugin%s (known: %s)", suggest(name, known), strings.Join(known, ", "))})
					continue
				}
				typed := mk()
				sub := pm[name]
				if sub == nil {
					sub = map[string]any{}
				}
				before := len(ps)
				ps = append(ps, check(path, sub, typeOf(typed))...)
				if len(ps) > before {
					continue
				}
				b, err := json.Marshal(sub)
				if err == nil {
					err = json.Unmarshal(b, typed)
				}
				if err != nil {
					ps = append(ps, Problem{Path: path, Msg: err.Error()})
					continue
				}
				if validate != nil {
					for _, p := range validate(name, typed) {
						ps = append(ps, Problem{Path: path + joinPath(p.Path), Msg: p.Msg})
					}
				}
				doc.Plugins[name] = typed
			}
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return doc, nil
}

// joinPath prefixes a plugin-relative path with the right separator.
func joinPath(rel string) string {
	if rel == "" || strings.HasPrefix(rel, "[") {
		return rel
	}
	return "." + rel
}

func versionOf(v any) (int, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			f, ferr := x.Float64()
			if ferr != nil || f != float64(int64(f)) {
				return 0, false
			}
			n = int64(f)
		}
		return int(n), true
	case string:
		// The earlier op-dbus wrote "1" or "1.0".
		switch x {
		case "1", "1.0":
			return 1, true
		}
	}
	return 0, false
}

// Hash is the canonical hash of a document: SHA-256 over its canonical JSON.
func (d *Document) Hash() string {
	b, _ := d.CanonicalJSON()
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// CanonicalJSON is the document as compact JSON with sorted object keys.
func (d *Document) CanonicalJSON() ([]byte, error) {
	b, err := json.Marshal(d.tree())
	if err != nil {
		return nil, err
	}
	// Round-trip through a generic map sorts struct fields too.
	var g any
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, err
	}
	return json.Marshal(g)
}

func (d *Document) tree() map[string]any {
	ps := map[string]any{}
	for k, v := range d.Plugins {
		ps[k] = v
	}
	return map[string]any{"version": Version, "plugins": ps}
}

// MarshalJSON writes {"version":1,"plugins":{...}}.
func (d *Document) MarshalJSON() ([]byte, error) { return json.Marshal(d.tree()) }

// HashOf is the canonical hash of any plugin-state map (plugin name →
// typed state), in the same form as Document.Hash.
func HashOf(states map[string]any) string {
	d := &Document{Version: Version, Plugins: states}
	return d.Hash()
}
