package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/op-dbus/op-dbus/internal/strictjson"
)

// FuzzDecode feeds arbitrary bytes to Decode, into a generic tree and into
// a typed struct. It must never panic; every refusal is an *Error with a
// kind and a message; what it accepts encoding/json accepts too, with the
// same result; and a value with a duplicate key is never accepted. The seed
// corpus is testdata/fuzz/FuzzDecode (the duplicate plan_hash attack,
// nested duplicates, huge nesting, ...).
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"plan_hash":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tree any
		err := strictjson.Options{UseNumber: true}.Decode(data, &tree)
		check(t, data, err)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber()
			var std any
			if err := dec.Decode(&std); err != nil {
				t.Fatalf("accepted %q, encoding/json refuses it: %v", data, err)
			}
			if !reflect.DeepEqual(tree, std) {
				t.Fatalf("%q: tree %#v, encoding/json %#v", data, tree, std)
			}
			if hasDuplicate(t, data) {
				t.Fatalf("accepted %q with a duplicate key", data)
			}
		}

		var typed, std doc
		err = strictjson.Decode(data, &typed)
		check(t, data, err)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&std); err != nil {
				t.Fatalf("accepted %q into a struct, encoding/json refuses it: %v", data, err)
			}
			if !reflect.DeepEqual(typed, std) {
				t.Fatalf("%q: decoded %+v, encoding/json %+v", data, typed, std)
			}
		}
	})
}

func check(t *testing.T, data []byte, err error) {
	t.Helper()
	if err == nil {
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		return
	}
	var e *strictjson.Error
	if !errors.As(err, &e) {
		t.Fatalf("%q: error %v (%T) is not a *strictjson.Error", data, err, err)
	}
	if e.Kind < strictjson.Syntax || e.Kind > strictjson.Type || e.Msg == "" || e.Offset < 0 || e.Offset > int64(len(data)) {
		t.Fatalf("%q: bad error %+v", data, e)
	}
}

// hasDuplicate is an independent check: does any object in the (valid)
// JSON have the same key twice?
func hasDuplicate(t *testing.T, data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		keys  map[string]bool
		inObj bool
		key   bool // the next token of this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.inObj && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		if top != nil && top.inObj {
			top.key = true
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, &frame{keys: map[string]bool{}, inObj: true, key: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
		}
	}
}
