package dbus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	godbus "github.com/godbus/dbus/v5"
)

// Conversion between JSON (state documents) and D-Bus values, driven by the
// D-Bus signature of the property or argument.
//
// JSON → D-Bus: fromJSON builds a Go value of exactly the type godbus
// encodes as the signature (int32 for "i", map[string]Variant for "a{sv}",
// a struct type for "(..)"), or fails naming the path and the signature.
//
// D-Bus → JSON: toJSON renders a value (as godbus decoded it, or as
// fromJSON built it) as a JSON tree: strings, booleans, json.Number, lists
// for arrays and structs, objects for dicts. A variant is written as its
// plain value when reading that JSON back infers the same signature
// (strings "s", booleans "b", integers "x", numbers with a '.' "d", lists
// of strings "as", other lists "av", objects "a{sv}"), else as the typed
// form {"$signature": "u", "$value": 5}, so a query re-applies exactly.

const (
	typedSig = "$signature"
	typedVal = "$value"
)

// convError is a conversion problem at a path inside a value.
type convError struct {
	path string
	msg  string
}

func (e *convError) Error() string { return e.path + ": " + e.msg }

func errAt(path string, t *sigType, format string, args ...any) error {
	return &convError{path, fmt.Sprintf("expected signature %s (%s), %s", t.str, describeSig(t), fmt.Sprintf(format, args...))}
}

// decodeJSON parses one JSON value keeping numbers exact.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

// goType is the Go type godbus encodes as t.
func goType(t *sigType) (reflect.Type, error) {
	switch t.code {
	case 'y':
		return reflect.TypeFor[uint8](), nil
	case 'b':
		return reflect.TypeFor[bool](), nil
	case 'n':
		return reflect.TypeFor[int16](), nil
	case 'q':
		return reflect.TypeFor[uint16](), nil
	case 'i':
		return reflect.TypeFor[int32](), nil
	case 'u':
		return reflect.TypeFor[uint32](), nil
	case 'x':
		return reflect.TypeFor[int64](), nil
	case 't':
		return reflect.TypeFor[uint64](), nil
	case 'd':
		return reflect.TypeFor[float64](), nil
	case 's':
		return reflect.TypeFor[string](), nil
	case 'o':
		return reflect.TypeFor[godbus.ObjectPath](), nil
	case 'g':
		return reflect.TypeFor[godbus.Signature](), nil
	case 'v':
		return reflect.TypeFor[godbus.Variant](), nil
	case 'a':
		e, err := goType(t.elem)
		if err != nil {
			return nil, err
		}
		return reflect.SliceOf(e), nil
	case 'm':
		if t.key.code == 'b' || t.key.code == 'g' || t.key.code == 'h' {
			return nil, fmt.Errorf("signature %s is not supported (dict keys of type %s)", t.str, t.key.str)
		}
		k, err := goType(t.key)
		if err != nil {
			return nil, err
		}
		v, err := goType(t.val)
		if err != nil {
			return nil, err
		}
		return reflect.MapOf(k, v), nil
	case 'r':
		fs := make([]reflect.StructField, len(t.fields))
		for i, f := range t.fields {
			ft, err := goType(f)
			if err != nil {
				return nil, err
			}
			fs[i] = reflect.StructField{Name: "F" + strconv.Itoa(i), Type: ft}
		}
		return reflect.StructOf(fs), nil
	}
	return nil, fmt.Errorf("signature %s (%s) is not supported", t.str, describeSig(t))
}

// fromJSONRaw converts raw JSON to a D-Bus value of signature t.
func fromJSONRaw(t *sigType, raw []byte, path string) (any, error) {
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, &convError{path, "invalid JSON value: " + err.Error()}
	}
	rv, err := fromJSON(t, v, path, 0)
	if err != nil {
		return nil, err
	}
	return rv.Interface(), nil
}

// maxValueDepth bounds nesting of values (variants can nest without a
// signature limit); godbus refuses more than 64 anyway.
const maxValueDepth = 64

func fromJSON(t *sigType, v any, path string, depth int) (reflect.Value, error) {
	var zero reflect.Value
	if depth > maxValueDepth {
		return zero, &convError{path, fmt.Sprintf("value nested deeper than %d levels", maxValueDepth)}
	}
	switch t.code {
	case 'b':
		b, ok := v.(bool)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		return reflect.ValueOf(b), nil
	case 'y', 'n', 'q', 'i', 'u', 'x', 't':
		n, ok := v.(json.Number)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		i, err := integer(n)
		if err != nil {
			return zero, errAt(path, t, "got %s", err)
		}
		lo, hi := intRange(t.code)
		if i.Cmp(lo) < 0 || i.Cmp(hi) > 0 {
			return zero, errAt(path, t, "got %s, out of range %s..%s", n, lo, hi)
		}
		rt, _ := goType(t)
		out := reflect.New(rt).Elem()
		if t.code == 'n' || t.code == 'i' || t.code == 'x' {
			out.SetInt(i.Int64())
		} else {
			out.SetUint(i.Uint64())
		}
		return out, nil
	case 'd':
		n, ok := v.(json.Number)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || math.IsInf(f, 0) {
			return zero, errAt(path, t, "got %s, out of range for a double", n)
		}
		return reflect.ValueOf(f), nil
	case 's', 'o', 'g':
		s, ok := v.(string)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		if !utf8.ValidString(s) {
			return zero, errAt(path, t, "got a string that is not valid UTF-8")
		}
		if strings.IndexByte(s, 0) >= 0 {
			return zero, errAt(path, t, "got a string containing a NUL character, which D-Bus strings cannot hold")
		}
		switch t.code {
		case 'o':
			if err := ValidObjectPath(s); err != nil {
				return zero, errAt(path, t, "got %q: %v", s, err)
			}
			return reflect.ValueOf(godbus.ObjectPath(s)), nil
		case 'g':
			if _, err := parseSignatures(s); err != nil {
				return zero, errAt(path, t, "got %q: %v", s, err)
			}
			sig, err := godbus.ParseSignature(s)
			if err != nil {
				return zero, errAt(path, t, "got %q: %v", s, err)
			}
			return reflect.ValueOf(sig), nil
		}
		return reflect.ValueOf(s), nil
	case 'v':
		return variantFromJSON(v, path, depth)
	case 'a':
		l, ok := v.([]any)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		rt, err := goType(t)
		if err != nil {
			return zero, &convError{path, err.Error()}
		}
		out := reflect.MakeSlice(rt, len(l), len(l))
		for i, e := range l {
			ev, err := fromJSON(t.elem, e, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return zero, err
			}
			out.Index(i).Set(ev)
		}
		return out, nil
	case 'm':
		m, ok := v.(map[string]any)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		rt, err := goType(t)
		if err != nil {
			return zero, &convError{path, err.Error()}
		}
		out := reflect.MakeMapWithSize(rt, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			kp := fmt.Sprintf("%s[%q]", path, k)
			kv, err := keyFromString(t.key, k, kp)
			if err != nil {
				return zero, err
			}
			vv, err := fromJSON(t.val, m[k], kp, depth+1)
			if err != nil {
				return zero, err
			}
			out.SetMapIndex(kv, vv)
		}
		return out, nil
	case 'r':
		l, ok := v.([]any)
		if !ok {
			return zero, errAt(path, t, "got %s", describeJSON(v))
		}
		if len(l) != len(t.fields) {
			return zero, errAt(path, t, "got a list of %d", len(l))
		}
		rt, err := goType(t)
		if err != nil {
			return zero, &convError{path, err.Error()}
		}
		out := reflect.New(rt).Elem()
		for i, f := range t.fields {
			fv, err := fromJSON(f, l[i], fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return zero, err
			}
			out.Field(i).Set(fv)
		}
		return out, nil
	}
	return zero, &convError{path, fmt.Sprintf("signature %s (%s) is not supported", t.str, describeSig(t))}
}

// keyFromString converts a JSON object key to a dict key of basic type t.
func keyFromString(t *sigType, k, path string) (reflect.Value, error) {
	switch t.code {
	case 's', 'o', 'g':
		return fromJSON(t, k, path, 0)
	case 'b':
		switch k {
		case "true":
			return reflect.ValueOf(true), nil
		case "false":
			return reflect.ValueOf(false), nil
		}
		return reflect.Value{}, &convError{path, fmt.Sprintf("dict key: expected \"true\" or \"false\" (key type b), got %q", k)}
	default:
		if _, err := strconv.ParseFloat(k, 64); err != nil {
			return reflect.Value{}, &convError{path, fmt.Sprintf("dict key: expected a number (key type %s, %s), got %q", t.str, describeSig(t), k)}
		}
		return fromJSON(t, json.Number(k), path, 0)
	}
}

func variantFromJSON(v any, path string, depth int) (reflect.Value, error) {
	var zero reflect.Value
	inner := v
	sigText := ""
	if m, ok := v.(map[string]any); ok && isTypedForm(m) {
		s, ok := m[typedSig].(string)
		if !ok {
			return zero, &convError{path, fmt.Sprintf("%s must be a D-Bus signature string, got %s", typedSig, describeJSON(m[typedSig]))}
		}
		sigText, inner = s, m[typedVal]
	} else {
		s, err := inferSig(v)
		if err != nil {
			return zero, &convError{path, "variant: " + err.Error()}
		}
		sigText = s
	}
	t, err := parseSignature(sigText)
	if err != nil {
		return zero, &convError{path, "variant: " + err.Error()}
	}
	iv, err := fromJSON(t, inner, path, depth+1)
	if err != nil {
		return zero, err
	}
	sig, err := godbus.ParseSignature(sigText)
	if err != nil {
		return zero, &convError{path, "variant: " + err.Error()}
	}
	return reflect.ValueOf(godbus.MakeVariantWithSignature(iv.Interface(), sig)), nil
}

func isTypedForm(m map[string]any) bool {
	if len(m) != 2 {
		return false
	}
	_, a := m[typedSig]
	_, b := m[typedVal]
	return a && b
}

// inferSig is the signature a plain JSON value has inside a variant.
func inferSig(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return "s", nil
	case bool:
		return "b", nil
	case json.Number:
		if strings.ContainsAny(string(x), ".eE") {
			return "d", nil
		}
		i, err := integer(x)
		if err != nil {
			return "", err
		}
		if i.IsInt64() {
			return "x", nil
		}
		if i.IsUint64() {
			return "t", nil
		}
		return "", fmt.Errorf("integer %s does not fit 64 bits", x)
	case []any:
		if len(x) == 0 {
			return "av", nil
		}
		for _, e := range x {
			if _, ok := e.(string); !ok {
				return "av", nil
			}
		}
		return "as", nil
	case map[string]any:
		if isTypedForm(x) {
			if s, ok := x[typedSig].(string); ok {
				return s, nil
			}
		}
		return "a{sv}", nil
	case nil:
		return "", fmt.Errorf("null has no D-Bus type (write a value, or {%q: \"s\", %q: \"...\"})", typedSig, typedVal)
	}
	return "", fmt.Errorf("unexpected JSON value %T", v)
}

// integer parses an integral JSON number exactly ("5", "-3", "1e3", "2.0").
func integer(n json.Number) (*big.Int, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		i, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("the number %s", s)
		}
		return i, nil
	}
	if len(s) > 400 {
		return nil, fmt.Errorf("the number %.20s..., too long", s)
	}
	f, _, err := big.ParseFloat(s, 10, 512, big.ToNearestEven)
	if err != nil || f.IsInf() {
		return nil, fmt.Errorf("the number %s", s)
	}
	if !f.IsInt() {
		return nil, fmt.Errorf("the fraction %s", s)
	}
	// Guard against huge exponents: anything beyond 2^64 is out of every range.
	if f.MantExp(nil) > 80 {
		return nil, fmt.Errorf("the number %s, out of range", s)
	}
	i, _ := f.Int(nil)
	return i, nil
}

func intRange(code byte) (lo, hi *big.Int) {
	switch code {
	case 'y':
		return big.NewInt(0), big.NewInt(math.MaxUint8)
	case 'n':
		return big.NewInt(math.MinInt16), big.NewInt(math.MaxInt16)
	case 'q':
		return big.NewInt(0), big.NewInt(math.MaxUint16)
	case 'i':
		return big.NewInt(math.MinInt32), big.NewInt(math.MaxInt32)
	case 'u':
		return big.NewInt(0), big.NewInt(math.MaxUint32)
	case 'x':
		return big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	}
	return big.NewInt(0), new(big.Int).SetUint64(math.MaxUint64)
}

// describeJSON names a JSON value's kind for "got ..." messages.
func describeJSON(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case json.Number:
		return "the number " + string(x)
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("the string %q", x)
	case []any:
		return fmt.Sprintf("a list of %d", len(x))
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// toJSON renders a D-Bus value of signature t as a JSON tree. typed
// selects the typed form for variants whose plain JSON would read back as
// another signature (for query output); without it variants are always
// plain (for comparison by value).
func toJSON(t *sigType, v any, path string, typed bool) (any, error) {
	return toJSONValue(t, reflect.ValueOf(v), path, typed, 0)
}

func toJSONValue(t *sigType, rv reflect.Value, path string, typed bool, depth int) (any, error) {
	if depth > maxValueDepth {
		return nil, &convError{path, fmt.Sprintf("value nested deeper than %d levels", maxValueDepth)}
	}
	for rv.IsValid() && (rv.Kind() == reflect.Interface || rv.Kind() == reflect.Pointer) {
		if rv.IsNil() {
			break
		}
		rv = rv.Elem()
	}
	bad := func() (any, error) {
		what := "nothing"
		if rv.IsValid() {
			what = rv.Type().String()
		}
		return nil, &convError{path, fmt.Sprintf("the service sent %s where signature %s was expected", what, t.str)}
	}
	if !rv.IsValid() {
		return bad()
	}
	switch t.code {
	case 'b':
		if rv.Kind() != reflect.Bool {
			return bad()
		}
		return rv.Bool(), nil
	case 'y', 'q', 'u', 't', 'n', 'i', 'x':
		switch rv.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
			return json.Number(strconv.FormatUint(rv.Uint(), 10)), nil
		case reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
			return json.Number(strconv.FormatInt(rv.Int(), 10)), nil
		}
		return bad()
	case 'd':
		if rv.Kind() != reflect.Float64 && rv.Kind() != reflect.Float32 {
			return bad()
		}
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, &convError{path, fmt.Sprintf("the double %v cannot be written in JSON", f)}
		}
		return formatDouble(f), nil
	case 's', 'o':
		if rv.Kind() != reflect.String {
			return bad()
		}
		return rv.String(), nil
	case 'g':
		if s, ok := rv.Interface().(godbus.Signature); ok {
			return s.String(), nil
		}
		if rv.Kind() == reflect.String {
			return rv.String(), nil
		}
		return bad()
	case 'v':
		vv, ok := rv.Interface().(godbus.Variant)
		if !ok {
			return bad()
		}
		it, err := parseSignature(vv.Signature().String())
		if err != nil {
			return nil, &convError{path, "variant: " + err.Error()}
		}
		plain, err := toJSONValue(it, reflect.ValueOf(vv.Value()), path, typed, depth+1)
		if err != nil {
			return nil, err
		}
		if !typed {
			return plain, nil
		}
		if s, err := inferSig(plain); err == nil && s == it.str {
			return plain, nil
		}
		return map[string]any{typedSig: it.str, typedVal: plain}, nil
	case 'a':
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return bad()
		}
		out := make([]any, rv.Len())
		for i := range out {
			e, err := toJSONValue(t.elem, rv.Index(i), fmt.Sprintf("%s[%d]", path, i), typed, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case 'm':
		if rv.Kind() != reflect.Map {
			return bad()
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			k, err := toJSONValue(t.key, it.Key(), path, typed, depth+1)
			if err != nil {
				return nil, err
			}
			ks := fmt.Sprint(k)
			e, err := toJSONValue(t.val, it.Value(), fmt.Sprintf("%s[%q]", path, ks), typed, depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = e
		}
		return out, nil
	case 'r':
		var fields []reflect.Value
		switch rv.Kind() {
		case reflect.Struct:
			for i := 0; i < rv.NumField(); i++ {
				if rv.Type().Field(i).IsExported() {
					fields = append(fields, rv.Field(i))
				}
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < rv.Len(); i++ {
				fields = append(fields, rv.Index(i))
			}
		default:
			return bad()
		}
		if len(fields) != len(t.fields) {
			return bad()
		}
		out := make([]any, len(fields))
		for i, f := range fields {
			e, err := toJSONValue(t.fields[i], f, fmt.Sprintf("%s[%d]", path, i), typed, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	}
	return nil, &convError{path, fmt.Sprintf("signature %s (%s) is not supported", t.str, describeSig(t))}
}

// formatDouble writes a double so that it reads back as a double inside a
// variant: integral values keep a ".0".
func formatDouble(f float64) json.Number {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEn") { // n: NaN/Inf are refused earlier
		s += ".0"
	}
	return json.Number(s)
}

// canonical is a value's comparison form: compact JSON with sorted keys and
// variants by value.
func canonical(t *sigType, v any) (string, error) {
	j, err := toJSON(t, v, "", false)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
