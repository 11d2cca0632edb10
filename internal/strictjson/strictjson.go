// Package strictjson is the one strict JSON decoder for everything op-dbus
// is sent: HTTP API bodies, state documents (HTTP, D-Bus, CLI, MCP) and MCP
// tool arguments.
//
// encoding/json quietly lets the last of two equal keys win, matches struct
// fields case-insensitively (so "PLAN_HASH" overrides "plan_hash"), ignores
// unknown fields and replaces invalid UTF-8. Decode refuses all of that: a
// duplicate key at any depth, an object key that is not exactly a field of
// the target struct, data after the value, invalid UTF-8, and nesting deeper
// than a limit. Every refusal is an *Error with a Kind for callers to switch
// on and the path of the offending value, e.g.
//
//	plugins.systemd.units["a.service"]: duplicate key
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Kind classifies an Error.
type Kind int

// The kinds of Error.
const (
	// Syntax: not JSON (including empty or truncated input and invalid UTF-8).
	Syntax Kind = iota + 1
	// Duplicate: an object has the same key twice.
	Duplicate
	// Unknown: an object key is not a field of the struct it decodes into.
	Unknown
	// Trailing: there is more than whitespace after the value.
	Trailing
	// Depth: arrays and objects nest deeper than the limit.
	Depth
	// Type: the value does not fit the Go type it decodes into.
	Type
)

func (k Kind) String() string {
	switch k {
	case Syntax:
		return "syntax"
	case Duplicate:
		return "duplicate"
	case Unknown:
		return "unknown"
	case Trailing:
		return "trailing"
	case Depth:
		return "depth"
	case Type:
		return "type"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is why Decode refused its input.
type Error struct {
	Kind Kind
	// Path names the offending value: struct fields and keys that are
	// identifiers joined with dots, other keys and map keys as ["key"] (but
	// a top-level key of an object that is not a map as it is),
	// array elements as [i] (`plugins.systemd.units["a.service"].enabled`,
	// `plan_hash`). Empty for the whole input. For Type errors it is
	// encoding/json's field path, which leaves map keys out.
	Path string
	// Offset is the byte offset in the input where the problem was found.
	Offset int64
	// Msg says what is wrong, without the path ("duplicate key").
	Msg string
	// Err is the underlying encoding/json error, if any.
	Err error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// DefaultMaxDepth is the nesting limit of Decode.
const DefaultMaxDepth = 100

// Options tune a decoder; the zero value is Decode's behaviour.
type Options struct {
	// MaxDepth limits nesting: the top-level value is at depth 0, a value
	// inside it at 1, and so on. 0 means DefaultMaxDepth.
	MaxDepth int
	// UseNumber decodes numbers into interface values as json.Number.
	UseNumber bool
}

// Decode strictly decodes one JSON value from data into v (a non-nil
// pointer). See the package documentation for what it refuses.
func Decode(data []byte, v any) error { return Options{}.Decode(data, v) }

// Decode is the package's Decode with these options.
func (o Options) Decode(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &json.InvalidUnmarshalError{Type: reflect.TypeOf(v)}
	}
	if !utf8.Valid(data) {
		off := badUTF8(data)
		return &Error{Kind: Syntax, Offset: int64(off), Msg: fmt.Sprintf("invalid UTF-8 at byte %d", off)}
	}
	if len(bytes.TrimLeft(data, " \t\r\n")) == 0 {
		return &Error{Kind: Syntax, Offset: int64(len(data)), Msg: "empty input", Err: io.EOF}
	}
	limit := o.MaxDepth
	if limit <= 0 {
		limit = DefaultMaxDepth
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := walker{dec: dec, data: data, max: limit}
	// A generic target is built while walking; a typed one is checked by
	// the walk and then filled by encoding/json.
	generic, build := v.(*any)
	build = build && o.UseNumber
	tree, err := w.value(rv.Type().Elem(), "", 0, build)
	if err != nil {
		return w.syntax(err)
	}
	// Whitespace only after the value.
	start := dec.InputOffset()
	rest := data[start:]
	if t := bytes.TrimLeft(rest, " \t\r\n"); len(t) > 0 {
		off := start + int64(len(rest)-len(t))
		return &Error{Kind: Trailing, Offset: off, Msg: fmt.Sprintf("unexpected data after the value at byte %d", off)}
	}
	if build {
		*generic = tree
		return nil
	}
	full := json.NewDecoder(bytes.NewReader(data))
	full.DisallowUnknownFields()
	if o.UseNumber {
		full.UseNumber()
	}
	if err := full.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &Error{Kind: Type, Path: te.Field, Offset: te.Offset, Err: err,
				Msg: fmt.Sprintf("expected %s, got JSON %s", te.Type, te.Value)}
		}
		// An UnmarshalJSON or UnmarshalText of the target refused the value,
		// or an unknown field the walk missed.
		return &Error{Kind: Type, Offset: full.InputOffset(), Err: err, Msg: strings.TrimPrefix(err.Error(), "json: ")}
	}
	return nil
}

func badUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// walker reads the token stream once, following the target type as far
// as it is plain data (structs, maps, slices, arrays, pointers); below an
// interface or a type with its own UnmarshalJSON it only checks keys for
// duplicates.
type walker struct {
	dec  *json.Decoder
	data []byte
	max  int
}

// next is the offset of the next token: past whitespace and separators.
func (w *walker) next() int64 {
	off := w.dec.InputOffset()
	for off < int64(len(w.data)) && strings.IndexByte(" \t\r\n,:", w.data[off]) >= 0 {
		off++
	}
	return off
}

// syntax turns an encoding/json error of the walk into an *Error.
func (w *walker) syntax(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	off := w.dec.InputOffset()
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		msg = "unexpected end of input"
	case se != nil:
		msg = fmt.Sprintf("%s (at byte %d)", msg, off)
	}
	return &Error{Kind: Syntax, Offset: off, Msg: msg, Err: err}
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// plain is t with pointers removed, or nil when encoding/json does not
// decode t field by field (interfaces, custom unmarshalers).
func plain(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
			return nil
		}
		switch t.Kind() {
		case reflect.Pointer:
			t = t.Elem()
		case reflect.Interface:
			return nil
		default:
			return t
		}
	}
	return nil
}

func (w *walker) value(t reflect.Type, path string, depth int, build bool) (any, error) {
	if depth > w.max {
		return nil, &Error{Kind: Depth, Path: path, Offset: w.next(), Msg: fmt.Sprintf("nested deeper than %d levels", w.max)}
	}
	t = plain(t)
	tok, err := w.dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		var fields *structFields
		if t != nil && t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshalerType) {
			fields = fieldsOf(t)
		}
		var m map[string]any
		if build {
			m = map[string]any{}
		}
		seen := map[string]bool{}
		for w.dec.More() {
			at := w.next()
			kt, err := w.dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, fmt.Errorf("object key is not a string")
			}
			var ct reflect.Type
			var kp string
			switch {
			case fields != nil:
				f, ok := fields.byName[k]
				if !ok {
					return nil, &Error{Kind: Unknown, Path: Join(path, k), Offset: at, Msg: fields.unknown(k)}
				}
				ct, kp = f, Join(path, k)
			case t != nil && t.Kind() == reflect.Map:
				ct, kp = t.Elem(), fmt.Sprintf("%s[%q]", path, k)
			default:
				kp = Join(path, k)
			}
			if seen[k] {
				return nil, &Error{Kind: Duplicate, Path: kp, Offset: at, Msg: "duplicate key"}
			}
			seen[k] = true
			v, err := w.value(ct, kp, depth+1, build)
			if err != nil {
				return nil, err
			}
			if build {
				m[k] = v
			}
		}
		if _, err := w.dec.Token(); err != nil {
			return nil, err
		}
		if build {
			return m, nil
		}
		return nil, nil
	case '[':
		var ct reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			ct = t.Elem()
		}
		var a []any
		if build {
			a = []any{}
		}
		for i := 0; w.dec.More(); i++ {
			v, err := w.value(ct, fmt.Sprintf("%s[%d]", path, i), depth+1, build)
			if err != nil {
				return nil, err
			}
			if build {
				a = append(a, v)
			}
		}
		if _, err := w.dec.Token(); err != nil {
			return nil, err
		}
		if build {
			return a, nil
		}
		return nil, nil
	}
	return nil, fmt.Errorf("unexpected %q", d)
}

// Join is the path of member k of the object at path: .k for identifiers,
// ["k"] otherwise, and a top-level key as it is. internal/state names the
// paths of its problems the same way.
func Join(path, k string) string {
	if path == "" {
		return k
	}
	return Member(path, k)
}

// Member is path.k, or path["k"] when k is not an identifier.
func Member(path, k string) string {
	if isIdent(k) {
		return path + "." + k
	}
	return fmt.Sprintf("%s[%q]", path, k)
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

// structFields are the JSON names of a struct's fields, matched exactly.
type structFields struct {
	byName map[string]reflect.Type
	names  []string // in declaration order
}

func (f *structFields) unknown(k string) string {
	for _, n := range f.names {
		if strings.EqualFold(n, k) {
			return fmt.Sprintf("unknown field (did you mean %q? names are case-sensitive)", n)
		}
	}
	if len(f.names) == 0 {
		return "unknown field (expected an empty object)"
	}
	return "unknown field (known: " + strings.Join(f.names, ", ") + ")"
}

var fieldCache sync.Map // reflect.Type -> *structFields

// fieldsOf follows encoding/json's naming: the json tag's name, else the Go
// name; "-" skips; fields of untagged embedded structs are promoted unless
// an outer field has the same name.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := collect(t, map[reflect.Type]bool{})
	fieldCache.Store(t, f)
	return f
}

// collect is fieldsOf without the cache; visiting stops a struct that
// embeds itself (through a pointer) from recursing forever.
func collect(t reflect.Type, visiting map[reflect.Type]bool) *structFields {
	visiting[t] = true
	defer delete(visiting, t)
	f := &structFields{byName: map[string]reflect.Type{}}
	var embedded []reflect.Type
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			et := sf.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				embedded = append(embedded, et)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		if _, dup := f.byName[name]; !dup {
			f.byName[name] = sf.Type
			f.names = append(f.names, name)
		}
	}
	for _, et := range embedded {
		if visiting[et] {
			continue
		}
		inner := collect(et, visiting)
		for _, n := range inner.names {
			if _, dup := f.byName[n]; !dup {
				f.byName[n] = inner.byName[n]
				f.names = append(f.names, n)
			}
		}
	}
	return f
}
