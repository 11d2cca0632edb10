package wireguard

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// These tests run inside a network namespace bed with userspace WireGuard
// devices (see inBed); wg(8) inside the bed is the oracle.

type harness struct {
	t   *testing.T
	p   *Plugin
	eng *engine.Engine
	dir string
}

func newHarness(t *testing.T, dir string) *harness {
	p := New(plugin.Options{})
	t.Cleanup(func() { p.Close() })
	return &harness{t: t, p: p, eng: engine.New([]plugin.Plugin{p}), dir: dir}
}

func (h *harness) doc(data string) *state.Document {
	h.t.Helper()
	d, err := state.Decode([]byte(data), state.FormatAuto, h.eng.Types(), h.eng.Validate)
	if err != nil {
		h.t.Fatalf("decode: %v\n%s", err, data)
	}
	return d
}

func (h *harness) plan(doc *state.Document) *engine.Plan {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pl, err := h.eng.Plan(ctx, doc)
	if err != nil {
		h.t.Fatalf("plan: %v", err)
	}
	return pl
}

func (h *harness) apply(doc *state.Document) (*engine.Plan, *engine.Result) {
	h.t.Helper()
	pl := h.plan(doc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return pl, h.eng.Apply(ctx, doc, pl)
}

func (h *harness) mustApply(doc *state.Document) *engine.Plan {
	h.t.Helper()
	pl, res := h.apply(doc)
	if !res.Success {
		h.t.Fatalf("apply failed: %v\n%s", res.Err, jsonOf(res))
	}
	return pl
}

// query returns the plugin's query output as a state document.
func (h *harness) query() string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := h.p.Query(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return `{"version":1,"plugins":{"wireguard":` + jsonOf(st) + `}}`
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// Apply listen port, private key and peers (endpoint, allowed IPs,
// keepalive, preshared key); wg show agrees; the plan is then empty, the
// query output plans nothing, and nothing printed carries a secret.
func TestTestbedApply(t *testing.T) {
	inBed(t, []string{"wg0"}, func(t *testing.T, dir string) {
		h := newHarness(t, dir)
		priv, psk := genKey(t), genKey(t)
		a, b := genKey(t).PublicKey(), genKey(t).PublicKey()
		keyFile, pskFile := writeKey(t, dir, "wg0.key", priv), writeKey(t, dir, "a.psk", psk)
		data := fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{
			"private_key_file":%q,"listen_port":51820,"fwmark":42,
			"peers":{%q:{"endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.2/32","fd00::2/128"],"persistent_keepalive":"25s","preshared_key_file":%q},
			         %q:{"endpoint":"[2001:db8::9]:4000","allowed_ips":["10.1.0.0/16"],"persistent_keepalive":0}}}}}}}`,
			keyFile, a, pskFile, b)
		doc := h.doc(data)
		pl := h.mustApply(doc)
		if len(pl.Ops) != 1 || pl.Ops[0].ID != "wireguard/configure/wg0" {
			t.Fatalf("plan: %s", jsonOf(pl.Ops))
		}
		d := wgDump(t, "wg0")
		if d.PrivateKey != priv.String() || d.PublicKey != priv.PublicKey().String() || d.ListenPort != "51820" || d.FwMark != "0x2a" {
			t.Errorf("interface after apply: %s", d.config())
		}
		want := map[string]dumpPeer{
			a.String(): {PresharedKey: psk.String(), Endpoint: "192.0.2.1:51820", AllowedIPs: "10.0.0.2/32,fd00::2/128", Keepalive: "25"},
			b.String(): {PresharedKey: "(none)", Endpoint: "[2001:db8::9]:4000", AllowedIPs: "10.1.0.0/16", Keepalive: "off"},
		}
		if len(d.Peers) != 2 {
			t.Errorf("peers: %s", d.config())
		}
		for k, w := range want {
			if d.Peers[k] != w {
				t.Errorf("peer %s = %+v, want %+v", k, d.Peers[k], w)
			}
		}
		if pl := h.plan(doc); !pl.Empty() {
			t.Errorf("plan after apply: %s", jsonOf(pl.Ops))
		}
		// Query round trip: the output is a document that plans nothing.
		q := h.query()
		if pl := h.plan(h.doc(q)); !pl.Empty() {
			t.Errorf("query output plans ops on an unchanged host: %s\n%s", jsonOf(pl.Ops), q)
		}
		if !strings.Contains(q, priv.PublicKey().String()) || !strings.Contains(q, `"has_preshared_key":true`) {
			t.Errorf("query lacks the public key or has_preshared_key: %s", q)
		}
		secretsIn(t, "query output", q, priv, psk)
		secretsIn(t, "the plan", jsonOf(pl), priv, psk)
	})
}

// An out-of-band change (wg set) is undone by applying the query output
// captured before it; a peer added out of band is left alone (only what
// the document names is managed), a peer removed out of band comes back.
func TestTestbedDriftRestore(t *testing.T) {
	inBed(t, []string{"wg0"}, func(t *testing.T, dir string) {
		h := newHarness(t, dir)
		a, b, extra := genKey(t).PublicKey(), genKey(t).PublicKey(), genKey(t).PublicKey()
		h.mustApply(h.doc(fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"private_key_file":%q,"listen_port":51820,
			"peers":{%q:{"endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.2/32"],"persistent_keepalive":25},
			         %q:{"allowed_ips":["10.0.0.3/32"]}}}}}}}`, writeKey(t, dir, "k", genKey(t)), a, b)))
		captured := h.query()
		before := wgDump(t, "wg0")

		wg(t, "set", "wg0", "listen-port", "40000", "fwmark", "7",
			"peer", a.String(), "endpoint", "198.51.100.7:9", "allowed-ips", "10.9.0.0/24", "persistent-keepalive", "7",
			"peer", b.String(), "remove",
			"peer", extra.String(), "allowed-ips", "10.0.0.99/32")
		if d := wgDump(t, "wg0"); d.config() == before.config() {
			t.Fatal("wg set changed nothing")
		}
		pl := h.mustApply(h.doc(captured))
		if len(pl.Ops) != 1 || !pl.Ops[0].Reversible {
			t.Errorf("restore plan: %s", jsonOf(pl.Ops))
		}
		after := wgDump(t, "wg0")
		if _, ok := after.Peers[extra.String()]; !ok {
			t.Errorf("the peer added out of band was removed, but the document does not name it")
		}
		delete(after.Peers, extra.String())
		if after.config() != before.config() {
			t.Errorf("after restore:\n%s\nwant:\n%s", after.config(), before.config())
		}
		// With replace_peers the extra peer goes too.
		var doc map[string]any
		_ = json.Unmarshal([]byte(captured), &doc)
		doc["plugins"].(map[string]any)["wireguard"].(map[string]any)["interfaces"].(map[string]any)["wg0"].(map[string]any)["replace_peers"] = true
		h.mustApply(h.doc(jsonOf(doc)))
		if after := wgDump(t, "wg0"); after.config() != before.config() {
			t.Errorf("after replace_peers:\n%s\nwant:\n%s", after.config(), before.config())
		}
	})
}

// state: absent removes that peer only; the others keep everything,
// including their preshared key.
func TestTestbedPeerAbsent(t *testing.T) {
	inBed(t, []string{"wg0"}, func(t *testing.T, dir string) {
		h := newHarness(t, dir)
		a, b, c := genKey(t).PublicKey(), genKey(t).PublicKey(), genKey(t).PublicKey()
		psk := writeKey(t, dir, "psk", genKey(t))
		h.mustApply(h.doc(fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"peers":{
			%q:{"allowed_ips":["10.0.0.1/32"],"preshared_key_file":%q},%q:{"allowed_ips":["10.0.0.2/32"]},%q:{"endpoint":"192.0.2.3:3"}}}}}}}`, a, psk, b, c)))
		before := wgDump(t, "wg0")
		pl := h.mustApply(h.doc(fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"peers":{%q:{"state":"absent"}}}}}}}`, b)))
		if len(pl.Ops) != 1 || !strings.Contains(pl.Ops[0].Description, "remove 1 peer") {
			t.Errorf("plan: %s", jsonOf(pl.Ops))
		}
		after := wgDump(t, "wg0")
		if _, ok := after.Peers[b.String()]; ok {
			t.Errorf("peer b still there")
		}
		delete(before.Peers, b.String())
		if after.config() != before.config() {
			t.Errorf("other peers changed:\n%s\nwant\n%s", after.config(), before.config())
		}
		if after.Peers[a.String()].PresharedKey != before.Peers[a.String()].PresharedKey {
			t.Errorf("peer a lost its preshared key")
		}
	})
}

// Bad input is refused before anything changes, naming the path; a key
// file's content is never quoted.
func TestTestbedBadInputChangesNothing(t *testing.T) {
	inBed(t, []string{"wg0"}, func(t *testing.T, dir string) {
		h := newHarness(t, dir)
		peer := genKey(t).PublicKey()
		wg(t, "set", "wg0", "listen-port", "1111", "peer", peer.String(), "allowed-ips", "10.0.0.1/32")
		before := wgDump(t, "wg0")
		badFile := filepath.Join(dir, "bad.key")
		const secretish = "dGhpcyBpcyBub3QgYSB3aXJlZ3VhcmQga2V5IGF0IGFsbA=="
		if err := os.WriteFile(badFile, []byte(secretish), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ ifc, want string }{
			{`"wg0":{"listen_port":2222,"peers":{"xyz":{"allowed_ips":["10.0.0.9/32"]}}}`, `interfaces.wg0.peers["xyz"]`},
			{`"wg0":{"listen_port":2222,"private_key_file":"` + badFile + `"}`, badFile},
			{`"wg0":{"listen_port":2222,"private_key_file":"` + dir + `/nope.key"}`, dir + "/nope.key"},
			{`"wg0":{"listen_port":2222,"peers":{"` + peer.String() + `":{"allowed_ips":["10.0.0.300/32"]}}}`, "allowed_ips[0]"},
			{`"wg0":{"listen_port":0},"wg1":{"listen_port":99999}`, "interfaces.wg1.listen_port"},
		} {
			_, err := state.Decode([]byte(`{"version":1,"plugins":{"wireguard":{"interfaces":{`+c.ifc+`}}}}`), state.FormatJSON, h.eng.Types(), h.eng.Validate)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want it to name %s", c.ifc, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), secretish) {
				t.Errorf("error quotes the key file: %v", err)
			}
		}
		// A key file that turns bad between load and plan: plan fails,
		// naming the file.
		good := writeKey(t, dir, "good.key", genKey(t))
		doc := h.doc(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"listen_port":2222,"private_key_file":"` + good + `"}}}}}`)
		if err := os.WriteFile(good, []byte(secretish), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.eng.Plan(ctx, doc); err == nil || !strings.Contains(err.Error(), good) || strings.Contains(err.Error(), secretish) {
			t.Errorf("plan with a bad key file: %v", err)
		}
		if after := wgDump(t, "wg0"); after.raw != before.raw {
			t.Errorf("wg show changed:\n%s\nwas\n%s", after.raw, before.raw)
		}
	})
}

// An interface that does not exist is created through netlink; this
// kernel (like many CI kernels) has no wireguard link type, so creation
// fails saying what to do, and nothing else of the plan is left applied.
func TestTestbedCreateInterface(t *testing.T) {
	inBed(t, []string{"wg0"}, func(t *testing.T, dir string) {
		h := newHarness(t, dir)
		kernel := run(t, "ip", "link", "add", "wgprobe", "type", "wireguard") == nil
		if kernel {
			run(t, "ip", "link", "del", "wgprobe")
		}
		peer := genKey(t).PublicKey()
		before := wgDump(t, "wg0")
		doc := h.doc(fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{
			"wg0":{"listen_port":3333,"peers":{%q:{"allowed_ips":["10.0.0.7/32"]}}},
			"wgnew":{"listen_port":4444}}}}}`, peer))
		h.eng.Parallel = 1 // wg0 first, then the creation that fails
		pl, res := h.apply(doc)
		ids := []string{}
		for _, op := range pl.Ops {
			ids = append(ids, op.ID)
		}
		if strings.Join(ids, " ") != "wireguard/configure/wg0 wireguard/create/wgnew wireguard/configure/wgnew" {
			t.Fatalf("plan: %v", ids)
		}
		if kernel {
			if !res.Success {
				t.Fatalf("create on a kernel with wireguard: %v", res.Err)
			}
			if d := wgDump(t, "wgnew"); d.ListenPort != "4444" {
				t.Errorf("wgnew: %s", d.raw)
			}
			return
		}
		if res.Success || res.Err == nil {
			t.Fatalf("apply succeeded without a wireguard link type")
		}
		const want = "this kernel has no wireguard link type; start a userspace implementation such as wireguard-go wgnew first"
		if !strings.Contains(res.Err.Error(), want) {
			t.Errorf("error %q lacks %q", res.Err, want)
		}
		// wg0 was configured, then rolled back to what it was.
		if res.Rollback == nil || !res.Rollback.Verify.OK {
			t.Fatalf("rollback: %s", jsonOf(res.Rollback))
		}
		if after := wgDump(t, "wg0"); after.config() != before.config() {
			t.Errorf("wg0 not rolled back:\n%s\nwant\n%s", after.config(), before.config())
		}
	})
}

// run runs argv (inside the bed) and returns its error.
func run(t *testing.T, argv ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return osexec.CommandContext(ctx, argv[0], argv[1:]...).Run()
}
