package state_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugins/hostname"
	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/strictjson"
)

var types = state.Types{
	"systemd":  func() any { return &systemd.State{} },
	"hostname": func() any { return &hostname.State{} },
}

func validate(name string, st any) state.Problems {
	switch name {
	case "systemd":
		return systemd.New(pluginOpts).Validate(st)
	case "hostname":
		return hostname.Spec.Validate(st)
	}
	return nil
}

func decode(t *testing.T, doc string, f state.Format) (*state.Document, error) {
	t.Helper()
	return state.Decode([]byte(doc), f, types, validate)
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		f         state.Format
	}{
		{"json", `{"version": 1, "plugins": {"systemd": {"units": {"nginx.service": {"active_state": "active", "enabled": true}}}}}`, state.FormatJSON},
		{"yaml", "version: 1\nplugins:\n  systemd:\n    units:\n      nginx.service:\n        active_state: active\n        enabled: true\n", state.FormatYAML},
		{"sniffed json", ` {"version":1,"plugins":{}}`, state.FormatAuto},
		{"no plugins", `{"version":1}`, state.FormatJSON},
		// The earlier Rust op-dbus wrote version as a string.
		{"legacy version", `{"version":"1.0","plugins":{"systemd":{"units":{"a.service":{"active_state":"inactive","enabled":false}}}}}`, state.FormatJSON},
		{"masked", `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"masked":true}}}}}`, state.FormatJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := decode(t, tc.doc, tc.f)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if doc.Version != 1 {
				t.Fatalf("version %d", doc.Version)
			}
		})
	}
	doc, err := decode(t, "version: 1\nplugins:\n  systemd:\n    units:\n      nginx.service:\n        enabled: true\n", state.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	u := doc.Plugins["systemd"].(*systemd.State).Units["nginx.service"]
	if u.Enabled == nil || !*u.Enabled || u.ActiveState != "" {
		t.Fatalf("decoded unit = %+v", u)
	}
}

func TestDecodeProblemsNamePaths(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		f         state.Format
		want      []string // each must appear in the error
	}{
		{"unknown field", `{"version":1,"plugins":{"systemd":{"units":{"nginx.service":{"enabeld":true}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["nginx.service"].enabeld: unknown field (did you mean "enabled"?)`}},
		{"unknown plugin", `{"version":1,"plugins":{"sytemd":{}}}`, state.FormatJSON,
			[]string{`plugins.sytemd: unknown plugin (did you mean "systemd"?)`}},
		{"wrong type bool", `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"enabled":"yes"}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["a.service"].enabled: expected true or false, got the string "yes"`}},
		{"wrong type object", `{"version":1,"plugins":{"systemd":{"units":[]}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units: expected an object, got a list`}},
		{"missing version", `{"plugins":{}}`, state.FormatJSON, []string{"version: missing"}},
		{"version 2", `{"version":2}`, state.FormatJSON, []string{"version: version 2 is not supported"}},
		{"version string", `{"version":"x"}`, state.FormatJSON, []string{`version: must be the number 1, got the string "x"`}},
		{"unit with slash", `{"version":1,"plugins":{"systemd":{"units":{"../etc/passwd.service":{"active_state":"active"}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["../etc/passwd.service"]: invalid unit name: contains '/'`}},
		{"unit with space", `{"version":1,"plugins":{"systemd":{"units":{"my unit.service":{"active_state":"active"}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["my unit.service"]: invalid unit name: contains a space`}},
		{"unit without type", `{"version":1,"plugins":{"systemd":{"units":{"nginx":{}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["nginx"]: invalid unit name: must end in a unit type`}},
		{"bad active state", `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"active_state":"running"}}}}}`, state.FormatJSON,
			[]string{`plugins.systemd.units["a.service"].active_state: must be "active" or "inactive", got "running"`}},
		{"contradiction", `{"version":1,"plugins":{"systemd":{"units":{"a.service":{"active_state":"active","masked":true}}}}}`, state.FormatJSON,
			[]string{`masked: true and active_state: "active" contradict`}},
		{"bad hostname", `{"version":1,"plugins":{"hostname":{"static_hostname":"bad_name"}}}`, state.FormatJSON,
			[]string{`plugins.hostname.static_hostname: invalid hostname "bad_name"`}},
		{"malformed json", `{"version":1,"plugins":{`, state.FormatJSON, []string{"invalid JSON"}},
		{"json syntax", "{\"version\":1,\n \"plugins\": {,}}", state.FormatJSON, []string{"invalid JSON at line 2"}},
		{"trailing data", `{"version":1} {"version":1}`, state.FormatJSON, []string{"unexpected data after the document"}},
		{"duplicate key", `{"version":1,"version":1}`, state.FormatJSON, []string{"version: duplicate key"}},
		{"malformed yaml", "version: 1\nplugins: [\n", state.FormatYAML, []string{"invalid YAML"}},
		{"yaml tabs", "version: 1\nplugins:\n\tsystemd: {}\n", state.FormatYAML, []string{"invalid YAML"}},
		{"yaml two docs", "version: 1\n---\nversion: 1\n", state.FormatYAML, []string{"more than one document"}},
		{"yaml alias", "version: 1\nplugins:\n  systemd: &a {}\n  hostname: *a\n", state.FormatYAML, []string{"aliases are not allowed"}},
		{"not an object", `[1,2]`, state.FormatJSON, []string{"document must be an object"}},
		{"empty", "", state.FormatAuto, []string{"empty document"}},
		{"whitespace", " \n\t ", state.FormatAuto, []string{"empty document"}},
		{"non-utf8", "{\"version\":1,\"plugins\":{\"hostname\":{\"location\":\"\xff\xfe\"}}}", state.FormatAuto, []string{"not valid UTF-8 (first bad byte at offset 48)"}},
		{"deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), state.FormatJSON, []string{"nested deeper than 64 levels"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(t, tc.doc, tc.f)
			if err == nil {
				t.Fatalf("decode accepted %q", tc.doc)
			}
			var ps state.Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error %v is not state.Problems", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n  %s\ndoes not contain\n  %s", msg, w)
				}
			}
		})
	}
}

func TestEveryProblemListed(t *testing.T) {
	_, err := decode(t, `{"version":1,"plugins":{"systemd":{"units":{"a b.service":{},"b.service":{"enabeld":1},"c.service":{"masked":"no"}}},"nope":{}}}`, state.FormatJSON)
	var ps state.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("got %v", err)
	}
	// Type problems of a plugin are all listed; its own rules (unit names)
	// are checked once its types are right, so "a b.service" waits.
	if len(ps) != 3 {
		t.Fatalf("want 3 problems, got %d: %v", len(ps), []state.Problem(ps))
	}
	_, err = decode(t, `{"version":1,"plugins":{"systemd":{"units":{"a b.service":{},"c/d.service":{},"e.service":{"active_state":"up"}}}}}`, state.FormatJSON)
	if !errors.As(err, &ps) || len(ps) != 3 {
		t.Fatalf("want 3 rule problems, got %v", err)
	}
}

func TestReadFileLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := state.ReadFile(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := state.ReadFile(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(50 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := state.ReadFile(big); err == nil || !strings.Contains(err.Error(), "larger than the 16 MiB limit") {
		t.Fatalf("50 MB: %v", err)
	}
}

func TestHashIsCanonical(t *testing.T) {
	a, err := decode(t, `{"version":1,"plugins":{"systemd":{"units":{"b.service":{"enabled":true},"a.service":{"active_state":"active"}}},"hostname":{"location":"x"}}}`, state.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decode(t, "plugins:\n  hostname:\n    location: x\n  systemd:\n    units:\n      a.service: {active_state: active}\n      b.service: {enabled: true}\nversion: 1\n", state.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Fatalf("same document, different hashes: %s %s", a.Hash(), b.Hash())
	}
	ca, _ := a.CanonicalJSON()
	if !bytes.HasPrefix(ca, []byte(`{"plugins":{"hostname":{"location":"x"},"systemd":{"units":{"a.service"`)) {
		t.Fatalf("canonical JSON not sorted: %s", ca)
	}
}

func TestSchemaFromTypes(t *testing.T) {
	b, err := state.Schema(types)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"active_state"`, `"static_hostname"`, `"additionalProperties": false`, `"enabled"`} {
		if !bytes.Contains(b, []byte(w)) {
			t.Errorf("schema lacks %s", w)
		}
	}
}

// A JSON document that cannot be parsed carries the *strictjson.Error, so
// front ends answer a duplicate key by its kind; the message is unchanged.
func TestDecodeStrictJSONError(t *testing.T) {
	_, err := decode(t, `{"version":1,"plugins":{"hostname":{"location":"a","location":"b"}}}`, state.FormatJSON)
	var se *strictjson.Error
	if !errors.As(err, &se) || se.Kind != strictjson.Duplicate || se.Path != "plugins.hostname.location" {
		t.Fatalf("got %v (%#v)", err, se)
	}
	var ps state.Problems
	if !errors.As(err, &ps) || err.Error() != "plugins.hostname.location: duplicate key" {
		t.Fatalf("got %q", err)
	}
	if _, err := decode(t, "version: 1\nversion: 1\n", state.FormatYAML); err == nil || errors.As(err, &se) {
		t.Fatalf("YAML: %v", err)
	}
}
