package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/strictjson"
)

type apply struct {
	PlanHash      string `json:"plan_hash"`
	ConfirmWithin string `json:"confirm_within,omitempty"`
}

type unit struct {
	ActiveState string `json:"active_state,omitempty"`
	Enabled     *bool  `json:"enabled,omitempty"`
}

type doc struct {
	Version int `json:"version"`
	Plugins struct {
		Systemd *struct {
			Units map[string]unit `json:"units"`
		} `json:"systemd,omitempty"`
		Other map[string]any `json:"other,omitempty"`
	} `json:"plugins"`
	Items []unit `json:"items,omitempty"`
}

type Base struct {
	ID   string `json:"id"`
	Skip string `json:"-"`
}

type embeds struct {
	Base
	*Inner
	Name   string `json:"name"`
	hidden string //nolint:unused // unexported fields are not JSON fields
	Raw    json.RawMessage
}

type Inner struct {
	Depth int `json:"depth"`
	*Inner
}

const hash = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

func refuse(t *testing.T, data string, v any, kind strictjson.Kind, path, msg string) *strictjson.Error {
	t.Helper()
	err := strictjson.Decode([]byte(data), v)
	var e *strictjson.Error
	if !errors.As(err, &e) {
		t.Fatalf("Decode(%.60q) = %v, want a *strictjson.Error", data, err)
	}
	if e.Kind != kind || e.Path != path || !strings.Contains(e.Msg, msg) {
		t.Fatalf("Decode(%.60q) = %s %q %q, want %s %q containing %q", data, e.Kind, e.Path, e.Msg, kind, path, msg)
	}
	return e
}

func TestDuplicates(t *testing.T) {
	// The issue: the last plan_hash would win.
	e := refuse(t, `{"plan_hash":"`+hash+`","plan_hash":"sha256:000"}`, new(apply), strictjson.Duplicate, "plan_hash", "duplicate key")
	if e.Error() != "plan_hash: duplicate key" {
		t.Fatalf("Error() = %q", e.Error())
	}
	if e.Offset != int64(len(`{"plan_hash":"`+hash+`",`)) {
		t.Fatalf("offset %d does not point at the second key", e.Offset)
	}
	// Escapes spell the same key.
	refuse(t, `{"plan_hash":"a","plan\u005fhash":"b"}`, new(apply), strictjson.Duplicate, "plan_hash", "duplicate key")
	// Case variants are not the field (encoding/json would let them override it).
	refuse(t, `{"plan_hash":"a","PLAN_HASH":"b"}`, new(apply), strictjson.Unknown, "PLAN_HASH", `did you mean "plan_hash"`)

	nested := `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"enabled":true},"a.service":{"enabled":false}}}}}`
	refuse(t, nested, new(doc), strictjson.Duplicate, `plugins.systemd.units["a.service"]`, "duplicate key")
	refuse(t, nested, new(any), strictjson.Duplicate, `plugins.systemd.units["a.service"]`, "duplicate key")
	refuse(t, nested, new(map[string]json.RawMessage), strictjson.Duplicate, `["plugins"].systemd.units["a.service"]`, "duplicate key")
	refuse(t, `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"enabled":true,"enabled":false}}}}}`, new(doc),
		strictjson.Duplicate, `plugins.systemd.units["a.service"].enabled`, "duplicate key")
	refuse(t, `{"version":1,"plugins":{"other":{"x":{"y y":1,"y y":2}}}}`, new(doc), strictjson.Duplicate, `plugins.other["x"]["y y"]`, "duplicate key")
	refuse(t, `{"items":[{},{"active_state":"a","active_state":"b"}]}`, new(doc), strictjson.Duplicate, `items[1].active_state`, "duplicate key")
	refuse(t, `[[{"a":1}],[{"b":1,"b":1}]]`, new(any), strictjson.Duplicate, `[1][0].b`, "duplicate key")
	// Same key in different objects is fine.
	var v any
	if err := strictjson.Decode([]byte(`{"a":{"k":1},"b":{"k":1},"c":[{"k":1},{"k":2}]}`), &v); err != nil {
		t.Fatal(err)
	}
}

func TestUnknown(t *testing.T) {
	refuse(t, `{"plan_hash":"a","confirm_whithin":"1s"}`, new(apply), strictjson.Unknown, "confirm_whithin", "unknown field (known: plan_hash, confirm_within)")
	refuse(t, `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"enabeld":true}}}}}`, new(doc), strictjson.Unknown,
		`plugins.systemd.units["a.service"].enabeld`, "unknown field")
	refuse(t, `{"version":1,"plugins":{"nosuch":{}}}`, new(doc), strictjson.Unknown, `plugins.nosuch`, "unknown field (known: systemd, other)")
	refuse(t, `{"x":1}`, new(struct{}), strictjson.Unknown, "x", "expected an empty object")
	// Under an interface or a RawMessage any key goes.
	if err := strictjson.Decode([]byte(`{"version":1,"plugins":{"other":{"anything":{"at":"all"}}}}`), new(doc)); err != nil {
		t.Fatal(err)
	}
}

func TestEmbedded(t *testing.T) {
	var v embeds
	err := strictjson.Decode([]byte(`{"id":"i","depth":2,"name":"n","Raw":{"k":[1]}}`), &v)
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "i" || v.Inner == nil || v.Depth != 2 || v.Name != "n" || string(v.Raw) != `{"k":[1]}` {
		t.Fatalf("decoded %+v", v)
	}
	refuse(t, `{"Skip":"x"}`, new(embeds), strictjson.Unknown, "Skip", "unknown field")
	refuse(t, `{"hidden":"x"}`, new(embeds), strictjson.Unknown, "hidden", "unknown field")
	refuse(t, `{"Raw":{"k":1,"k":2}}`, new(embeds), strictjson.Duplicate, "Raw.k", "duplicate key")
}

func TestTrailingAndSyntax(t *testing.T) {
	e := refuse(t, `{"plan_hash":"a"} {"plan_hash":"b"}`, new(apply), strictjson.Trailing, "", "unexpected data after the value at byte 18")
	if e.Offset != 18 {
		t.Fatalf("offset %d", e.Offset)
	}
	refuse(t, `{"plan_hash":"a"}x`, new(apply), strictjson.Trailing, "", "at byte 17")
	refuse(t, `1 2`, new(any), strictjson.Trailing, "", "at byte 2")
	if err := strictjson.Decode([]byte(" {\"plan_hash\":\"a\"} \r\n\t "), new(apply)); err != nil {
		t.Fatalf("trailing whitespace: %v", err)
	}

	refuse(t, ``, new(apply), strictjson.Syntax, "", "empty input")
	refuse(t, " \n", new(apply), strictjson.Syntax, "", "empty input")
	refuse(t, `{"plan_hash":`, new(apply), strictjson.Syntax, "", "unexpected end of input")
	refuse(t, `{"plan_hash" "a"}`, new(apply), strictjson.Syntax, "", "at byte")
	refuse(t, `{"a":1,}`, new(any), strictjson.Syntax, "", "invalid character")
	refuse(t, `{1:2}`, new(any), strictjson.Syntax, "", "invalid character")
	e = refuse(t, "{\"plan_hash\":\"\xff\"}", new(apply), strictjson.Syntax, "", "invalid UTF-8 at byte 14")
	if e.Offset != 14 {
		t.Fatalf("offset %d", e.Offset)
	}
}

func TestDepth(t *testing.T) {
	ok := strings.Repeat("[", strictjson.DefaultMaxDepth+1) + strings.Repeat("]", strictjson.DefaultMaxDepth+1)
	if err := strictjson.Decode([]byte(ok), new(any)); err != nil {
		t.Fatalf("depth %d: %v", strictjson.DefaultMaxDepth, err)
	}
	deep := "[" + ok + "]"
	refuse(t, deep, new(any), strictjson.Depth, strings.Repeat("[0]", strictjson.DefaultMaxDepth+1), "nested deeper than 100 levels")

	obj := strings.Repeat(`{"a":`, 10) + "1" + strings.Repeat("}", 10)
	e := strictjson.Options{MaxDepth: 5}.Decode([]byte(obj), new(any))
	var se *strictjson.Error
	if !errors.As(e, &se) || se.Kind != strictjson.Depth || se.Path != "a.a.a.a.a.a" {
		t.Fatalf("got %v", e)
	}
	// Far beyond encoding/json's own limit: refused early, no stack trouble.
	huge := strings.Repeat("[", 1<<20)
	refuse(t, huge, new(any), strictjson.Depth, strings.Repeat("[0]", strictjson.DefaultMaxDepth+1), "nested deeper")
}

func TestType(t *testing.T) {
	refuse(t, `{"plan_hash":1}`, new(apply), strictjson.Type, "plan_hash", "expected string, got JSON number")
	refuse(t, `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"enabled":"yes"}}}}}`, new(doc), strictjson.Type,
		"plugins.systemd.units.enabled", "expected bool, got JSON string")
	if err := strictjson.Decode([]byte(`{}`), nil); err == nil {
		t.Fatal("nil target accepted")
	}
	var a apply
	if err := strictjson.Decode([]byte(`{}`), a); err == nil {
		t.Fatal("non-pointer target accepted")
	}
}

func TestDecodesLikeEncodingJSON(t *testing.T) {
	in := `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"active_state":"active","enabled":true}}},"other":{"n":1.5,"l":[null,true,"s",{}]}},"items":[{}]}`
	var got, want doc
	if err := strictjson.Decode([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(in), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	// A generic tree with json.Number, built in one pass.
	var tree, std any
	if err := (strictjson.Options{UseNumber: true}).Decode([]byte(in), &tree); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(in)))
	dec.UseNumber()
	if err := dec.Decode(&std); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tree, std) {
		t.Fatalf("tree %#v\nwant %#v", tree, std)
	}
	if err := strictjson.Decode([]byte(in), &tree); err != nil || tree.(map[string]any)["version"] != 1.0 {
		t.Fatalf("without UseNumber: %v %#v", err, tree)
	}
}

func TestKindString(t *testing.T) {
	for k, s := range map[strictjson.Kind]string{strictjson.Syntax: "syntax", strictjson.Duplicate: "duplicate",
		strictjson.Unknown: "unknown", strictjson.Trailing: "trailing", strictjson.Depth: "depth", strictjson.Type: "type", 0: "Kind(0)"} {
		if k.String() != s {
			t.Errorf("%d: %q", int(k), k.String())
		}
	}
}
