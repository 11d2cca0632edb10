package wireguard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Key files are outside input: whatever they hold, parsing never panics,
// accepts only 32 bytes of base64, and an error never quotes the content.
func FuzzParseKeyFile(f *testing.F) {
	for _, s := range []string{
		"YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8Fs=\n",
		"  YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8Fs=  ",
		"YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8Fs",
		"YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8Fs=\nsecond line\n",
		"", "\n", "xyz", "c2VjcmV0LWJ1dC1ub3QtYS1rZXk=",
		"YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8F==",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		k, err := ParseKeyFile(b)
		if !bytes.Equal(in, b) {
			t.Fatal("ParseKeyFile changed its input")
		}
		trimmed := strings.TrimSpace(string(b))
		if err != nil {
			if len(trimmed) >= 6 && strings.Contains(err.Error(), trimmed) {
				t.Fatalf("error quotes the content: %v", err)
			}
			return
		}
		raw, derr := base64.StdEncoding.DecodeString(trimmed)
		if derr != nil || len(raw) != 32 || !bytes.Equal(raw, k[:]) {
			t.Fatalf("accepted %q as key %x", trimmed, k[:])
		}
	})
}

// A document that decodes and validates plans without error, and every
// op's data is what Apply can read back.
func FuzzDocument(f *testing.F) {
	pk := "YNqHbfBQKaGvzefSSuufuNKWgM1UB8/F/yp5yMPk8Fs="
	for _, s := range []string{
		`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"listen_port":51820,"fwmark":1,"replace_peers":true,"peers":{"` + pk + `":{"endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.5/24","fd00::1/64"],"persistent_keepalive":"25s"}}}}}}}`,
		`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"peers":{"` + pk + `":{"state":"absent"}}}}}}}`,
		`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"peers":{"` + pk + `":{"endpoint":"[::ffff:1.2.3.4]:1","allowed_ips":[],"persistent_keepalive":0}}}}}}}`,
		"version: 1\nplugins:\n  wireguard:\n    interfaces:\n      wg0:\n        peers:\n          \"" + pk + "\":\n            persistent_keepalive: 1m\n",
		`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg/0":{}}}}}`,
		`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"peers":{"xyz":{}}}}}}}`,
	} {
		f.Add(s)
	}
	p := New(plugin.Options{})
	types := state.Types{"wireguard": p.NewState}
	validate := func(_ string, st any) state.Problems { return p.Validate(st) }
	f.Fuzz(func(t *testing.T, doc string) {
		d, err := state.Decode([]byte(doc), state.FormatAuto, types, validate)
		if err != nil {
			return
		}
		des, ok := d.Plugins["wireguard"].(*State)
		if !ok {
			return // a document without the wireguard key
		}
		// Key files that validated were read; give plan their public
		// parts as QueryFor would.
		cur := &State{Interfaces: map[string]*Interface{"wg0": {ListenPort: 1, Peers: map[string]*Peer{pk: {AllowedIPs: []string{}}}}}, files: map[string]keyFile{}}
		for _, ifc := range des.Interfaces {
			if ifc == nil {
				continue
			}
			cur.files[ifc.PrivateKeyFile] = keyFile{public: pk}
			for _, peer := range ifc.Peers {
				if peer != nil {
					cur.files[peer.PresharedKeyFile] = keyFile{}
				}
			}
		}
		ops, err := p.Plan(cur, des)
		if err != nil {
			t.Fatalf("valid document does not plan: %v\n%s", err, doc)
		}
		for _, op := range ops {
			var od opData
			if err := json.Unmarshal(op.Data, &od); err != nil {
				t.Fatalf("op data: %v", err)
			}
			for _, po := range od.Peers {
				if _, err := ParseKey(po.PublicKey); err != nil {
					t.Fatalf("op peer key: %v", err)
				}
				if po.Endpoint != "" {
					if _, err := ParseEndpoint(po.Endpoint); err != nil {
						t.Fatalf("op endpoint: %v", err)
					}
				}
				for _, a := range po.AllowedIPs {
					if _, err := ParseAllowedIP(a); err != nil {
						t.Fatalf("op allowed ip: %v", err)
					}
				}
				if po.Keepalive != nil && (*po.Keepalive < 0 || *po.Keepalive > 65535) {
					t.Fatalf("keepalive %d", *po.Keepalive)
				}
			}
		}
		// Planning the plan's own target again is stable: a second plan
		// of the same inputs yields the same ops.
		again, _ := p.Plan(cur, des)
		a, _ := json.Marshal(ops)
		b, _ := json.Marshal(again)
		if !bytes.Equal(a, b) {
			t.Fatalf("plan is not deterministic:\n%s\n%s", a, b)
		}
	})
}
