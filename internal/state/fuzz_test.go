package state_test

import (
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

var pluginOpts = plugin.Options{}

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic, and
// whatever it accepts must re-encode to a document it accepts again with
// the same hash.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"plugins":{"systemd":{"units":{"nginx.service":{"active_state":"active","enabled":true}}}}}`,
		"version: 1\nplugins:\n  hostname:\n    static_hostname: web1\n",
		`{"version":"1.0","plugins":{"systemd":{"units":{"a@b.service":{"masked":false}}}}}`,
		`{"version":1,"plugins":{"hostname":{"chassis":"vm","location":"rack \u00e9"}}}`,
		"[", "{}", "null", "version: !!binary aGk=",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := state.Decode(data, state.FormatAuto, types, validate)
		if err != nil {
			return
		}
		b, err := doc.CanonicalJSON()
		if err != nil {
			t.Fatalf("canonical JSON of an accepted document: %v", err)
		}
		again, err := state.Decode(b, state.FormatJSON, types, validate)
		if err != nil {
			t.Fatalf("re-decoding the canonical form failed: %v\n%s", err, b)
		}
		if again.Hash() != doc.Hash() {
			t.Fatalf("hash changed on round trip")
		}
	})
}
