package state

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"

	"github.com/op-dbus/op-dbus/internal/strictjson"
)

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

func typeOf(v any) reflect.Type {
	return reflect.TypeOf(v)
}

// check walks a generic tree against a Go type the way encoding/json would
// decode it, and names every mismatch by path: unknown fields, wrong types,
// numbers out of range.
func check(path string, v any, t reflect.Type) Problems {
	for t.Kind() == reflect.Pointer {
		if v == nil {
			return nil
		}
		t = t.Elem()
	}
	if t == rawMessageType || t.Kind() == reflect.Interface {
		return nil
	}
	if v == nil {
		// null for a non-pointer leaves the zero value; treat as absent only
		// where the type allows it.
		switch t.Kind() {
		case reflect.Map, reflect.Slice:
			return nil
		}
		return Problems{{path, "expected " + want(t) + ", got null"}}
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return Problems{{path, "expected an object, got " + kindOf(v)}}
		}
		fields := structFields(t)
		names := slices.Sorted(maps.Keys(fields))
		var ps Problems
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := fields[k]
			fp := fieldPath(path, k)
			if !ok {
				ps = append(ps, Problem{fp, "unknown field" + suggest(k, names)})
				continue
			}
			ps = append(ps, check(fp, m[k], f.Type)...)
		}
		return ps
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return Problems{{path, "expected an object, got " + kindOf(v)}}
		}
		var ps Problems
		for _, k := range slices.Sorted(maps.Keys(m)) {
			ps = append(ps, check(fmt.Sprintf("%s[%q]", path, k), m[k], t.Elem())...)
		}
		return ps
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			return Problems{{path, "expected a list, got " + kindOf(v)}}
		}
		var ps Problems
		for i, e := range a {
			ps = append(ps, check(fmt.Sprintf("%s[%d]", path, i), e, t.Elem())...)
		}
		return ps
	case reflect.String:
		if _, ok := v.(string); !ok {
			return Problems{{path, "expected a string, got " + describe(v)}}
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return Problems{{path, "expected true or false, got " + describe(v)}}
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			return Problems{{path, "expected an integer, got " + describe(v)}}
		}
		if p := checkInt(n, t); p != "" {
			return Problems{{path, p}}
		}
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			return Problems{{path, "expected a number, got " + describe(v)}}
		}
		if _, err := n.Float64(); err != nil {
			return Problems{{path, "number out of range: " + n.String()}}
		}
	default:
		return Problems{{path, "cannot be decoded (internal type " + t.String() + ")"}}
	}
	return nil
}

func checkInt(n json.Number, t reflect.Type) string {
	s := n.String()
	if strings.ContainsAny(s, ".eE") {
		f, err := n.Float64()
		if err != nil || f != math.Trunc(f) {
			return "expected an integer, got " + s
		}
		s = fmt.Sprintf("%.0f", f)
	}
	var over bool
	switch t.Kind() {
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var u uint64
		if _, err := fmt.Sscan(s, &u); err != nil || strings.HasPrefix(s, "-") {
			return fmt.Sprintf("expected a non-negative integer, got %s", n)
		}
		over = reflect.New(t).Elem().OverflowUint(u)
	default:
		var i int64
		if _, err := fmt.Sscan(s, &i); err != nil {
			return fmt.Sprintf("integer out of range: %s", n)
		}
		over = reflect.New(t).Elem().OverflowInt(i)
	}
	if over {
		return fmt.Sprintf("integer out of range for %s: %s", t.Kind(), n)
	}
	return ""
}

func fieldPath(path, k string) string { return strictjson.Member(path, k) }

// structFields maps JSON names to fields, following encoding/json's rules
// for tags, "-" and embedded structs.
func structFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name := strings.Split(tag, ",")[0]
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for k, v := range structFields(et) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct:
		return "an object"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "an integer"
	}
}

func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// describe shows a scalar value with its kind, for "expected X, got Y".
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("the string %q", x)
	case json.Number:
		return "the number " + x.String()
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	}
	return kindOf(v)
}

// suggest returns ` (did you mean "x"?)` for a close known name.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(got), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
