package dbus

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	godbus "github.com/godbus/dbus/v5"
)

func TestFromJSON(t *testing.T) {
	const at = "objects[0].properties.P"
	cases := []struct {
		sig, in string
		want    any    // the Go value, when ok
		err     string // part of the error, when not
	}{
		{"b", `true`, true, ""},
		{"b", `"yes"`, nil, `objects[0].properties.P: expected signature b (boolean), got the string "yes"`},
		{"b", `1`, nil, "got the number 1"},
		{"y", `255`, uint8(255), ""},
		{"y", `256`, nil, "expected signature y (byte, 0..255), got 256, out of range 0..255"},
		{"n", `-32768`, int16(-32768), ""},
		{"n", `32768`, nil, "out of range -32768..32767"},
		{"q", `65535`, uint16(65535), ""},
		{"i", `-2147483648`, int32(-2147483648), ""},
		{"i", `2147483648`, nil, "out of range"},
		{"i", `1.5`, nil, "expected signature i (int32), got the fraction 1.5"},
		{"i", `2.0`, int32(2), ""},
		{"i", `1e3`, int32(1000), ""},
		{"i", `"5"`, nil, `got the string "5"`},
		{"u", `4294967295`, uint32(4294967295), ""},
		{"u", `-1`, nil, "expected signature u (uint32), got -1, out of range 0..4294967295"},
		{"x", `-9223372036854775808`, int64(-9223372036854775808), ""},
		{"x", `9223372036854775808`, nil, "out of range"},
		{"t", `18446744073709551615`, uint64(18446744073709551615), ""},
		{"t", `18446744073709551616`, nil, "out of range"},
		{"t", `1e400`, nil, "out of range"},
		{"d", `0.5`, 0.5, ""},
		{"d", `3`, 3.0, ""},
		{"d", `1e999`, nil, "out of range for a double"},
		{"d", `null`, nil, "got null"},
		{"s", `"héllo"`, "héllo", ""},
		{"s", `"a\u0000b"`, nil, "NUL"},
		{"s", `5`, nil, "expected signature s (string), got the number 5"},
		{"o", `"/org/x"`, godbus.ObjectPath("/org/x"), ""},
		{"o", `"org/x"`, nil, "must start with '/'"},
		{"g", `"a{sv}"`, godbus.ParseSignatureMust("a{sv}"), ""},
		{"g", `"a{"`, nil, "expected signature g"},
		{"as", `["a","b"]`, []string{"a", "b"}, ""},
		{"as", `[]`, []string{}, ""},
		{"as", `["a",1]`, nil, "objects[0].properties.P[1]: expected signature s (string), got the number 1"},
		{"as", `"a"`, nil, "expected signature as (array of s), got the string"},
		{"ai", `[1,-2]`, []int32{1, -2}, ""},
		{"ay", `[0,255]`, []uint8{0, 255}, ""},
		{"aai", `[[1],[2,3]]`, [][]int32{{1}, {2, 3}}, ""},
		{"a{ss}", `{"k":"v"}`, map[string]string{"k": "v"}, ""},
		{"a{ss}", `{"k":1}`, nil, `objects[0].properties.P["k"]: expected signature s`},
		{"a{us}", `{"7":"v"}`, map[uint32]string{7: "v"}, ""},
		{"a{us}", `{"x":"v"}`, nil, `dict key: expected a number (key type u`},
		{"a{us}", `{"-1":"v"}`, nil, "out of range"},
		{"a{bs}", `{"true":"v"}`, nil, "not supported (dict keys of type b)"},
		{"a{sv}", `{"a":"s","b":true,"c":5,"d":1.5,"e":["x"],"f":{"g":1}}`, map[string]godbus.Variant{
			"a": godbus.MakeVariant("s"), "b": godbus.MakeVariant(true), "c": godbus.MakeVariant(int64(5)),
			"d": godbus.MakeVariant(1.5), "e": godbus.MakeVariant([]string{"x"}),
			"f": godbus.MakeVariant(map[string]godbus.Variant{"g": godbus.MakeVariant(int64(1))}),
		}, ""},
		{"a{sv}", `{"a":null}`, nil, `objects[0].properties.P["a"]: variant: null has no D-Bus type`},
		{"v", `{"$signature":"u","$value":5}`, godbus.MakeVariant(uint32(5)), ""},
		{"v", `{"$signature":"u","$value":-5}`, nil, "out of range"},
		{"v", `{"$signature":"zz","$value":5}`, nil, "unknown type code"},
		{"v", `{"$signature":5,"$value":5}`, nil, "$signature must be a D-Bus signature string"},
		{"v", `[1,"a"]`, godbus.MakeVariant([]godbus.Variant{godbus.MakeVariant(int64(1)), godbus.MakeVariant("a")}), ""},
		{"v", `18446744073709551615`, godbus.MakeVariant(uint64(18446744073709551615)), ""},
		{"v", `1e999999`, nil, "out of range"},
		{"(si)", `["a",1]`, struct {
			F0 string
			F1 int32
		}{"a", 1}, ""},
		{"(si)", `["a"]`, nil, "expected signature (si) (struct, a list of 2 fields), got a list of 1"},
		{"(si)", `["a",true]`, nil, "objects[0].properties.P[1]: expected signature i"},
		{"h", `1`, nil, "not supported"},
	}
	for _, c := range cases {
		st, err := parseSignature(c.sig)
		if err != nil {
			t.Fatalf("%s: %v", c.sig, err)
		}
		got, err := fromJSONRaw(st, []byte(c.in), at)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %s: got %v (%v), want error %q", c.sig, c.in, got, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", c.sig, c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			// Struct types are built with reflect.StructOf: compare by value.
			if reflect.TypeOf(got).Kind() != reflect.Struct || !reflect.DeepEqual(toMap(got), toMap(c.want)) {
				t.Errorf("%s %s: got %#v, want %#v", c.sig, c.in, got, c.want)
			}
		}
		if s := godbus.SignatureOf(got).String(); s != c.sig {
			t.Errorf("%s %s: godbus encodes the value as %s", c.sig, c.in, s)
		}
	}
}

func toMap(v any) []any {
	rv := reflect.ValueOf(v)
	out := []any{}
	for i := 0; i < rv.NumField(); i++ {
		out = append(out, rv.Field(i).Interface())
	}
	return out
}

// A value converted from JSON and rendered back is the same JSON, typed
// variants included, so a query re-applies exactly.
func TestJSONRoundTrip(t *testing.T) {
	cases := []struct{ sig, in string }{
		{"b", `false`},
		{"t", `18446744073709551615`},
		{"d", `0.1`},
		{"d", `3.0`},
		{"d", `-1e+300`},
		{"as", `["a","ü"]`},
		{"a{sv}", `{"a":"s","b":true,"c":5,"d":1.5,"e":["x"],"f":{"g":1},"h":{"$signature":"u","$value":7},"i":[1,"x"],"j":{"$signature":"as","$value":[]}}`},
		{"a{ua{ss}}", `{"1":{"k":"v"},"2":{}}`},
		{"(sa(iv))", `["x",[[1,"y"],[2,{"$signature":"ai","$value":[1,2]}]]]`},
		{"v", `{"$signature":"i","$value":2}`},
		{"v", `3.0`},
		{"v", `2.5`},
		{"v", `{"$signature":"(si)","$value":["a",1]}`},
		{"v", `{"$signature":"v","$value":"s"}`},
		{"ay", `[0,1,255]`},
		{"o", `"/"`},
		{"g", `"a{sv}"`},
	}
	for _, c := range cases {
		st, _ := parseSignature(c.sig)
		v, err := fromJSONRaw(st, []byte(c.in), "p")
		if err != nil {
			t.Errorf("%s %s: %v", c.sig, c.in, err)
			continue
		}
		j, err := toJSON(st, v, "p", true)
		if err != nil {
			t.Errorf("%s %s: %v", c.sig, c.in, err)
			continue
		}
		got, _ := json.Marshal(j)
		var a, b any
		_ = json.Unmarshal(got, &a)
		_ = json.Unmarshal([]byte(c.in), &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: %s came back as %s", c.sig, c.in, got)
		}
	}
}

// Values as godbus decodes them from the wire ([]any for structs, maps of
// variants) render like the ones fromJSON builds.
func TestToJSONDecodedShapes(t *testing.T) {
	st, _ := parseSignature("a(si)")
	j, err := toJSON(st, [][]any{{"a", int32(1)}}, "p", true)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(j); string(b) != `[["a",1]]` {
		t.Errorf("got %s", b)
	}
	st, _ = parseSignature("d")
	if _, err := toJSON(st, 0.0/zero(), "objects[1].properties.R", true); err == nil || !strings.Contains(err.Error(), "objects[1].properties.R: the double NaN") {
		t.Errorf("NaN: %v", err)
	}
	st, _ = parseSignature("s")
	if _, err := toJSON(st, int32(1), "p", true); err == nil || !strings.Contains(err.Error(), "sent int32 where signature s was expected") {
		t.Errorf("wrong type: %v", err)
	}
}

func zero() float64 { return 0 }

// Comparison is by value: 5 written for a variant equals a uint32 5.
func TestCanonical(t *testing.T) {
	st, _ := parseSignature("a{sv}")
	a, _ := fromJSONRaw(st, []byte(`{"n":5,"d":2}`), "p")
	b := map[string]godbus.Variant{"n": godbus.MakeVariant(uint32(5)), "d": godbus.MakeVariant(int32(2))}
	ca, _ := canonical(st, a)
	cb, _ := canonical(st, b)
	if ca != cb {
		t.Errorf("%s != %s", ca, cb)
	}
	st, _ = parseSignature("d")
	x, _ := fromJSONRaw(st, []byte(`1`), "p")
	y, _ := fromJSONRaw(st, []byte(`1.0`), "p")
	cx, _ := canonical(st, x)
	cy, _ := canonical(st, y)
	if cx != cy {
		t.Errorf("1 and 1.0 as doubles: %s != %s", cx, cy)
	}
}
