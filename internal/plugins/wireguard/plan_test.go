package wireguard

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

func genKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeKey(t testing.TB, dir, name string, k wgtypes.Key) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// decode runs the real document decoder with the plugin's Validate.
func decode(t testing.TB, p *Plugin, doc string) (*State, error) {
	t.Helper()
	d, err := state.Decode([]byte(doc), state.FormatAuto,
		state.Types{"wireguard": p.NewState},
		func(_ string, st any) state.Problems { return p.Validate(st) })
	if err != nil {
		return nil, err
	}
	return d.Plugins["wireguard"].(*State), nil
}

// secretsIn fails if any of the secrets (raw bytes in base64, hex or as
// text) appear in s.
func secretsIn(t testing.TB, what, s string, secrets ...wgtypes.Key) {
	t.Helper()
	for _, k := range secrets {
		for _, form := range []string{k.String(), strings.TrimRight(k.String(), "="), string(k[:]), hexKey(k)} {
			if strings.Contains(s, form) {
				t.Errorf("%s contains a secret key:\n%s", what, s)
			}
		}
	}
}

func hexKey(k wgtypes.Key) string {
	const h = "0123456789abcdef"
	b := make([]byte, 0, 64)
	for _, c := range k {
		b = append(b, h[c>>4], h[c&15])
	}
	return string(b)
}

// Plan carries public keys and file names only: the private and preshared
// keys appear neither in Op.Data nor in Changes nor in the description.
func TestPlanNeverCarriesSecrets(t *testing.T) {
	dir := t.TempDir()
	priv, psk := genKey(t), genKey(t)
	oldPriv, oldPSK := genKey(t), genKey(t)
	peer, removed := genKey(t).PublicKey(), genKey(t).PublicKey()
	privFile, pskFile := writeKey(t, dir, "wg0.key", priv), writeKey(t, dir, "peer.psk", psk)

	// The live device as wgctrl reports it, with other keys.
	live := fromDevice(&wgtypes.Device{
		Name: "wg0", PrivateKey: oldPriv, PublicKey: oldPriv.PublicKey(), ListenPort: 1000,
		Peers: []wgtypes.Peer{
			{PublicKey: peer, PresharedKey: oldPSK, Endpoint: &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}},
			{PublicKey: removed, PresharedKey: oldPSK},
		},
	})
	p := New(plugin.Options{})
	des, err := decode(t, p, `{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{
		"private_key_file":"`+privFile+`","listen_port":51820,"fwmark":7,
		"peers":{"`+peer.String()+`":{"endpoint":"192.0.2.9:51820","allowed_ips":["10.0.0.2/32"],"persistent_keepalive":"25s","preshared_key_file":"`+pskFile+`"},
		         "`+removed.String()+`":{"state":"absent"}}}}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	// What QueryFor adds: read from the files, public parts only.
	cur := &State{Interfaces: map[string]*Interface{"wg0": live}, files: map[string]keyFile{
		privFile: {public: priv.PublicKey().String()},
		pskFile:  {digest: digest(psk)},
	}}
	ops, err := p.Plan(cur, des)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].ID != "wireguard/configure/wg0" {
		t.Fatalf("ops = %+v, want one configure op", ops)
	}
	b, _ := json.Marshal(ops)
	secretsIn(t, "the plan", string(b), priv, psk, oldPriv, oldPSK)
	for _, w := range []string{priv.PublicKey().String(), privFile, pskFile, `"listen_port":51820`, `"fwmark":7`, `"persistent_keepalive":25`, `"remove":true`} {
		if !strings.Contains(string(b), w) {
			t.Errorf("plan lacks %s:\n%s", w, b)
		}
	}
	if ops[0].Reversible {
		t.Errorf("a private key change is marked reversible, but the old key is not known")
	}
	// The query output of the same device carries no secret either.
	q, _ := json.Marshal(cur)
	secretsIn(t, "query output", string(q), oldPriv, oldPSK)
	if !strings.Contains(string(q), oldPriv.PublicKey().String()) || !strings.Contains(string(q), `"has_preshared_key":true`) {
		t.Errorf("query output lacks the public key or has_preshared_key: %s", q)
	}
	// Nor does the state printed with %+v, as a careless log line would.
	secretsIn(t, "%+v of the state", strings.ReplaceAll(fmtV(cur), " ", ""), oldPriv, oldPSK)

	// Same keys in the files as on the device: nothing to do.
	cur.files[privFile] = keyFile{public: oldPriv.PublicKey().String()}
	cur.files[pskFile] = keyFile{digest: digest(oldPSK)}
	des.Interfaces["wg0"].ListenPort = 1000
	des.Interfaces["wg0"].FirewallMark = nil
	des.Interfaces["wg0"].Peers[peer.String()] = &Peer{Endpoint: "192.0.2.1:1", PresharedKeyFile: pskFile}
	delete(des.Interfaces["wg0"].Peers, removed.String())
	ops, err = p.Plan(cur, des)
	if err != nil || len(ops) != 0 {
		t.Fatalf("plan against matching keys = %+v, %v; want nothing", ops, err)
	}
}

func fmtV(v any) string {
	b, _ := json.Marshal(v)
	return string(b) + strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf("%+v", v), "\n", ""))
}

// Plan without the key file having been read (no QueryFor) is an error,
// not a silent "no change".
func TestPlanNeedsKeyFileRead(t *testing.T) {
	p := New(plugin.Options{})
	des := &State{Interfaces: map[string]*Interface{"wg0": {PrivateKeyFile: "/etc/wireguard/wg0.key"}}}
	cur := &State{Interfaces: map[string]*Interface{"wg0": {}}}
	_, err := p.Plan(cur, des)
	if err == nil || !strings.Contains(err.Error(), "interfaces.wg0.private_key_file") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlanPeers(t *testing.T) {
	p := New(plugin.Options{})
	a, b, c := genKey(t).PublicKey(), genKey(t).PublicKey(), genKey(t).PublicKey()
	ka := 25
	live := &Interface{ListenPort: 51820, Peers: map[string]*Peer{
		a.String(): {Endpoint: "192.0.2.1:51820", AllowedIPs: []string{"10.0.0.1/32"}, PersistentKeepalive: ka},
		b.String(): {AllowedIPs: []string{}, PersistentKeepalive: 0},
		c.String(): {AllowedIPs: []string{"10.0.0.3/32"}, PersistentKeepalive: 0},
	}}
	cur := &State{Interfaces: map[string]*Interface{"wg0": live}}
	plan := func(d *Interface) []plugin.Op {
		t.Helper()
		ops, err := p.Plan(cur, &State{Interfaces: map[string]*Interface{"wg0": d}})
		if err != nil {
			t.Fatal(err)
		}
		return ops
	}
	// Same content, other spelling: host bits, order, "25s".
	if ops := plan(&Interface{Peers: map[string]*Peer{a.String(): {Endpoint: "192.0.2.1:51820", AllowedIPs: []string{"10.0.0.1/32"}, PersistentKeepalive: "25s"}}}); len(ops) != 0 {
		t.Errorf("same peer planned %+v", ops)
	}
	if ops := plan(&Interface{Peers: map[string]*Peer{c.String(): {AllowedIPs: []string{"10.0.0.3/32", "10.0.0.3/32"}}}}); len(ops) != 0 {
		t.Errorf("duplicate allowed ip planned %+v", ops)
	}
	ops := plan(&Interface{Peers: map[string]*Peer{b.String(): {State: "absent"}}})
	if len(ops) != 1 || !strings.Contains(string(ops[0].Data), `"remove":true`) || strings.Contains(string(ops[0].Data), a.String()) {
		t.Fatalf("absent peer b: %+v", ops)
	}
	if !ops[0].Reversible {
		t.Errorf("removing a peer without preshared key is reversible")
	}
	ops = plan(&Interface{ReplacePeers: true, Peers: map[string]*Peer{a.String(): {}}})
	if len(ops) != 1 || strings.Count(string(ops[0].Data), `"remove":true`) != 2 || strings.Contains(string(ops[0].Data), `"public_key":"`+a.String()) {
		t.Fatalf("replace_peers keeping a: %s", ops[0].Data)
	}
	// Absent peer that is not there: nothing.
	if ops := plan(&Interface{Peers: map[string]*Peer{genKey(t).PublicKey().String(): {State: "absent"}}}); len(ops) != 0 {
		t.Errorf("absent missing peer planned %+v", ops)
	}
	// Missing interface: create, then configure.
	ops, err := p.Plan(&State{}, &State{Interfaces: map[string]*Interface{"wg9": {ListenPort: 1}}})
	if err != nil || len(ops) != 2 || ops[0].ID != "wireguard/create/wg9" || ops[1].DependsOn[0] != ops[0].ID {
		t.Fatalf("missing interface: %+v %v", ops, err)
	}
}

// Subset gives the interface as it was, with replace_peers so that a
// rollback removes the peers the transaction added.
func TestSubset(t *testing.T) {
	p := New(plugin.Options{})
	a := genKey(t).PublicKey().String()
	fw := 3
	st := &State{Interfaces: map[string]*Interface{
		"wg0": {ListenPort: 5, FirewallMark: &fw, PublicKey: "x", Peers: map[string]*Peer{a: {Endpoint: "192.0.2.1:1", AllowedIPs: []string{}, PersistentKeepalive: 0, HasPresharedKey: true}}},
		"wg1": {ListenPort: 6},
	}}
	out := p.Subset(st, []string{"interfaces/wg0", "interfaces/nope"}).(*State)
	if len(out.Interfaces) != 1 || !out.Interfaces["wg0"].ReplacePeers || out.Interfaces["wg0"].ListenPort != 5 || out.Interfaces["wg0"].PublicKey != "" {
		t.Fatalf("subset: %+v", out.Interfaces["wg0"])
	}
	if ap := out.Interfaces["wg0"].Peers[a]; ap == nil || ap.Endpoint != "192.0.2.1:1" || ap.AllowedIPs == nil {
		t.Fatalf("subset peer: %+v", ap)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	p := New(plugin.Options{})
	good := writeKey(t, dir, "good.key", genKey(t))
	bad := filepath.Join(dir, "bad.key")
	const badContent = "c2VjcmV0LWJ1dC1ub3QtYS1rZXk="
	if err := os.WriteFile(bad, []byte(badContent+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.key")
	peer := genKey(t).PublicKey().String()
	doc := func(ifc string) string {
		return `{"version":1,"plugins":{"wireguard":{"interfaces":` + ifc + `}}}`
	}
	cases := []struct{ doc, path, msg string }{
		{`{"wg0":{"peers":{"xyz":{}}}}`, `plugins.wireguard.interfaces.wg0.peers["xyz"]`, "not a WireGuard key"},
		{`{"wg0":{"peers":{"` + strings.Repeat("A", 43) + `!":{}}}}`, `peers["`, "invalid base64"},
		{`{"wg0":{"private_key_file":"` + missing + `"}}`, "interfaces.wg0.private_key_file", missing},
		{`{"wg0":{"private_key_file":"` + bad + `"}}`, "interfaces.wg0.private_key_file", bad},
		{`{"wg0":{"private_key_file":"relative.key"}}`, "interfaces.wg0.private_key_file", "absolute"},
		{`{"wg0":{"private_key_file":"` + dir + `"}}`, "interfaces.wg0.private_key_file", "not a regular file"},
		{`{"wg0":{"listen_port":70000}}`, "interfaces.wg0.listen_port", "out of range"},
		{`{"wg0":{"listen_port":-1}}`, "interfaces.wg0.listen_port", "out of range"},
		{`{"wg0":{"peers":{"` + peer + `":{"allowed_ips":["10.0.0.0/33"]}}}}`, `allowed_ips[0]`, "not a CIDR"},
		{`{"wg0":{"peers":{"` + peer + `":{"allowed_ips":["10.0.0.1"]}}}}`, `allowed_ips[0]`, "not a CIDR"},
		{`{"wg0":{"peers":{"` + peer + `":{"endpoint":"vpn.example.com:51820"}}}}`, `.endpoint`, "not an IP address"},
		{`{"wg0":{"peers":{"` + peer + `":{"endpoint":"192.0.2.1"}}}}`, `.endpoint`, "not IP:port"},
		{`{"wg0":{"peers":{"` + peer + `":{"persistent_keepalive":"1.5s"}}}}`, `.persistent_keepalive`, "whole seconds"},
		{`{"wg0":{"peers":{"` + peer + `":{"persistent_keepalive":70000}}}}`, `.persistent_keepalive`, "out of range"},
		{`{"wg0":{"peers":{"` + peer + `":{"persistent_keepalive":true}}}}`, `.persistent_keepalive`, "expected seconds"},
		{`{"wg0":{"peers":{"` + peer + `":{"state":"gone"}}}}`, `.state`, "present"},
		{`{"wg0":{"peers":{"` + peer + `":{"preshared_key_file":"` + missing + `"}}}}`, `.preshared_key_file`, missing},
		{`{"sixteen-bytes-xx":{}}`, `interfaces["sixteen-bytes-xx"]`, "at most 15"},
		{`{"wg/0":{}}`, `interfaces["wg/0"]`, "'/'"},
	}
	for _, c := range cases {
		_, err := decode(t, p, doc(c.doc))
		if err == nil {
			t.Errorf("%s: accepted", c.doc)
			continue
		}
		if !strings.Contains(err.Error(), c.path) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s:\n got %v\nwant path %s and %q", c.doc, err, c.path, c.msg)
		}
		if strings.Contains(err.Error(), badContent) || strings.Contains(err.Error(), "secret") {
			t.Errorf("error quotes the key file's content: %v", err)
		}
	}
	st, err := decode(t, p, doc(`{"wg0":{"private_key_file":"`+good+`","listen_port":51820,"fwmark":0,"peers":{"`+peer+`":{"endpoint":"[2001:db8::1]:51820","allowed_ips":["10.0.0.5/24","fd00::/64"],"persistent_keepalive":25}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if st.Interfaces["wg0"].FirewallMark == nil || *st.Interfaces["wg0"].FirewallMark != 0 {
		t.Errorf("fwmark 0 not kept as set")
	}
	// YAML, with the duration form.
	if _, err := decode(t, p, "version: 1\nplugins:\n  wireguard:\n    interfaces:\n      wg0:\n        peers:\n          \""+peer+"\":\n            persistent_keepalive: 25s\n"); err != nil {
		t.Fatal(err)
	}
}

func TestKeepalive(t *testing.T) {
	for _, c := range []struct {
		in   any
		secs int
		set  bool
	}{{nil, 0, false}, {float64(25), 25, true}, {"25s", 25, true}, {"1m", 60, true}, {0, 0, true}, {"0s", 0, true}} {
		s, set, err := Keepalive(c.in)
		if err != nil || s != c.secs || set != c.set {
			t.Errorf("Keepalive(%v) = %d %v %v", c.in, s, set, err)
		}
	}
}
