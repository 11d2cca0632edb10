// Package nixos writes NixOS configurations: a small Nix expression writer
// with correct escaping, and the generator behind `op-dbus nixos generate`.
package nixos

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Raw is a Nix expression written as is (./host.nix, import ./x.nix).
type Raw string

// Entry is one binding of a Set: Path is an attribute path (a.b.c), each
// element quoted when it is not an identifier. Comment lines, if any, are
// written above the binding.
type Entry struct {
	Path    []string
	Value   any
	Comment []string
}

// Set is an attribute set whose bindings keep the order given; a
// map[string]any is a set with keys sorted. Trailing comment lines are
// written after the last binding.
type Set struct {
	Entries  []Entry
	Trailing []string
}

// Add appends a binding for a dotted path of plain identifiers.
func (s *Set) Add(path string, v any, comment ...string) {
	s.Entries = append(s.Entries, Entry{Path: strings.Split(path, "."), Value: v, Comment: comment})
}

var keywords = map[string]bool{
	"if": true, "then": true, "else": true, "assert": true, "with": true, "let": true,
	"in": true, "rec": true, "inherit": true, "or": true,
}

// IsIdent reports whether s can be written as a bare attribute name.
func IsIdent(s string) bool {
	if s == "" || keywords[s] {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '\'' || r == '-'):
		default:
			return false
		}
	}
	return true
}

// AttrName is s as an attribute name: bare when it is an identifier,
// otherwise a quoted string.
func AttrName(s string) string {
	if IsIdent(s) {
		return s
	}
	return String(s)
}

// AttrPath joins attribute names with dots, quoting where needed.
func AttrPath(p []string) string {
	out := make([]string, len(p))
	for i, s := range p {
		out[i] = AttrName(s)
	}
	return strings.Join(out, ".")
}

// String is s as a Nix "..." string literal. `\`, `"` and `${` are escaped
// (the last as \${), newline, tab and carriage return as \n, \t, \r. Nix
// strings cannot hold NUL; use checkString first.
func String(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '$':
			if i+1 < len(s) && s[i+1] == '{' {
				b.WriteString(`\$`)
			} else {
				b.WriteByte('$')
			}
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func checkString(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("string %q contains a NUL byte, which Nix strings cannot hold", s)
	}
	return nil
}

// Render writes v as a Nix expression formatted the way nixfmt formats it:
// two-space indentation, one binding per line, empty sets and lists as
// `{ }` and `[ ]`. It fails on values Nix cannot represent.
func Render(v any) (string, error) {
	var b strings.Builder
	if err := render(&b, v, 0); err != nil {
		return "", err
	}
	return b.String(), nil
}

func indent(b *strings.Builder, n int) {
	for i := 0; i < n; i++ {
		b.WriteString("  ")
	}
}

func render(b *strings.Builder, v any, depth int) error {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		if err := checkString(x); err != nil {
			return err
		}
		b.WriteString(String(x))
	case Raw:
		b.WriteString(string(x))
	case int:
		b.WriteString(intLit(int64(x)))
	case int64:
		b.WriteString(intLit(x))
	case float64:
		s, err := floatLit(x)
		if err != nil {
			return err
		}
		b.WriteString(s)
	case json.Number:
		if i, err := x.Int64(); err == nil {
			b.WriteString(intLit(i))
			return nil
		}
		f, err := x.Float64()
		if err != nil {
			return fmt.Errorf("number %s does not fit a Nix integer or float", x)
		}
		s, err := floatLit(f)
		if err != nil {
			return err
		}
		b.WriteString(s)
	case []string:
		l := make([]any, len(x))
		for i, s := range x {
			l[i] = s
		}
		return render(b, l, depth)
	case []any:
		if len(x) == 0 {
			b.WriteString("[ ]")
			return nil
		}
		if len(x) == 1 && scalar(x[0]) {
			b.WriteString("[ ")
			if err := render(b, x[0], depth); err != nil {
				return err
			}
			b.WriteString(" ]")
			return nil
		}
		b.WriteString("[\n")
		for _, e := range x {
			indent(b, depth+1)
			if err := render(b, e, depth+1); err != nil {
				return err
			}
			b.WriteByte('\n')
		}
		indent(b, depth)
		b.WriteByte(']')
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		s := &Set{}
		for _, k := range keys {
			s.Entries = append(s.Entries, Entry{Path: []string{k}, Value: x[k]})
		}
		return render(b, s, depth)
	case *Set:
		if len(x.Entries) == 0 && len(x.Trailing) == 0 {
			b.WriteString("{ }")
			return nil
		}
		b.WriteString("{\n")
		for _, e := range x.Entries {
			for _, p := range e.Path {
				if err := checkString(p); err != nil {
					return fmt.Errorf("attribute name: %w", err)
				}
			}
			for _, c := range e.Comment {
				comment(b, c, depth+1)
			}
			indent(b, depth+1)
			b.WriteString(AttrPath(e.Path))
			b.WriteString(" = ")
			if err := render(b, e.Value, depth+1); err != nil {
				return err
			}
			b.WriteString(";\n")
		}
		for _, c := range x.Trailing {
			comment(b, c, depth+1)
		}
		indent(b, depth)
		b.WriteByte('}')
	default:
		return fmt.Errorf("cannot write %T as Nix", v)
	}
	return nil
}

func comment(b *strings.Builder, c string, depth int) {
	for _, line := range strings.Split(c, "\n") {
		if line == "" {
			b.WriteByte('\n')
			continue
		}
		indent(b, depth)
		b.WriteString("# ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
}

func scalar(v any) bool {
	switch v.(type) {
	case []any, []string, map[string]any, *Set:
		return false
	}
	return true
}

// intLit writes an integer; negative ones in parentheses so they stay one
// element in a list, and the most negative one as an expression, since
// its magnitude is not a valid literal.
func intLit(i int64) string {
	switch {
	case i == math.MinInt64:
		return "(-9223372036854775807 - 1)"
	case i < 0:
		return "(" + strconv.FormatInt(i, 10) + ")"
	}
	return strconv.FormatInt(i, 10)
}

func floatLit(f float64) (string, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return "", fmt.Errorf("number %v has no Nix literal", f)
	}
	s := strconv.FormatFloat(math.Abs(f), 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	if f < 0 || math.Signbit(f) {
		return "(-" + s + ")", nil
	}
	return s, nil
}
