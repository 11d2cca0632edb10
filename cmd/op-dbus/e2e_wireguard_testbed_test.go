package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// WireGuard end to end: the op-dbus binary runs inside a network namespace
// bed with userspace WireGuard devices (wireguard-go as a library; this
// kernel need not have the wireguard link type), because wgctrl finds
// userspace devices through /var/run/wireguard of its own mount namespace.
// wg(8) inside the bed is the oracle.

// wgRun runs op-dbus inside the bed.
func wgRun(t *testing.T, w *testbed.WireGuard, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return runCmd(t, w.Command(ctx, nil, append([]string{binary}, args...)...))
}

func wgOracle(t *testing.T, w *testbed.WireGuard, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := w.WG(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// wgConfig is `wg show NAME dump` without the private key and counters:
// public key, port, fwmark, then per peer key, psk set, endpoint, allowed
// IPs, keepalive.
func wgConfig(t *testing.T, w *testbed.WireGuard, name string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(wgOracle(t, w, "show", name, "dump")), "\n")
	out := []string{strings.Join(strings.Split(lines[0], "\t")[1:], " ")}
	var peers []string
	for _, l := range lines[1:] {
		f := strings.Split(l, "\t")
		peers = append(peers, fmt.Sprintf("%s psk=%v %s %s %s", f[0], f[1] != "(none)", f[2], f[3], f[7]))
	}
	slices.Sort(peers) // wg lists peers in the order they were added
	return strings.Join(append(out, peers...), "\n") + "\n"
}

func newKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTestbedWireGuardApplyDriftAbsentBadInput(t *testing.T) {
	w := testbed.NewWireGuard(t, "wg0")
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	priv := newKey(t)
	keyFile := writeFile(t, dir, "wg0.key", priv.String()+"\n")
	a, b := newKey(t).PublicKey().String(), newKey(t).PublicKey().String()
	doc := writeFile(t, dir, "wg.json", fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{
		"private_key_file":%q,"listen_port":51820,
		"peers":{%q:{"endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.2/32"],"persistent_keepalive":"25s"},
		         %q:{"allowed_ips":["10.0.0.3/32"]}}}}}}}`, keyFile, a, b))

	r := wgRun(t, w, sd, "diff", doc)
	wantCode(t, r, 2, "diff before apply")
	if !strings.Contains(r.stdout, "configure WireGuard interface wg0") || !strings.Contains(r.stdout, priv.PublicKey().String()) {
		t.Errorf("plan:\n%s", r.stdout)
	}
	wantCode(t, wgRun(t, w, sd, "apply", "--yes", doc), 0, "apply")
	got := wgConfig(t, w, "wg0")
	for _, want := range []string{
		priv.PublicKey().String() + " 51820 off",
		a + " psk=false 192.0.2.1:51820 10.0.0.2/32 25",
		b + " psk=false (none) 10.0.0.3/32 off",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("wg show lacks %q:\n%s", want, got)
		}
	}
	if ids := planOpsIn(t, w, sd, "diff", doc); len(ids) != 0 {
		t.Errorf("diff after apply: %v", ids)
	}

	// Query round trip, then drift and restore from the captured query.
	r = wgRun(t, w, sd, "query", "-p", "wireguard", "-o", "json")
	wantCode(t, r, 0, "query")
	captured := writeFile(t, dir, "captured.json", r.stdout)
	if ids := planOpsIn(t, w, sd, "diff", captured); len(ids) != 0 {
		t.Errorf("query output plans ops on an unchanged host: %v\n%s", ids, r.stdout)
	}
	before := wgConfig(t, w, "wg0")
	wgOracle(t, w, "set", "wg0", "listen-port", "40000", "peer", a, "endpoint", "198.51.100.1:1", "allowed-ips", "10.9.9.0/24", "persistent-keepalive", "off", "peer", b, "remove")
	if ids := planOpsIn(t, w, sd, "diff", captured); len(ids) != 1 || ids[0] != "wireguard/configure/wg0" {
		t.Errorf("diff after drift: %v", ids)
	}
	wantCode(t, wgRun(t, w, sd, "apply", "--yes", captured), 0, "apply captured query")
	if got := wgConfig(t, w, "wg0"); got != before {
		t.Errorf("after restoring:\n%s\nwant\n%s", got, before)
	}

	// state: absent removes that peer only.
	absent := writeFile(t, dir, "absent.yaml", "version: 1\nplugins:\n  wireguard:\n    interfaces:\n      wg0:\n        peers:\n          \""+b+"\":\n            state: absent\n")
	wantCode(t, wgRun(t, w, sd, "apply", "--yes", absent), 0, "apply absent")
	if got := wgConfig(t, w, "wg0"); strings.Contains(got, b) || !strings.Contains(got, a+" psk=false 192.0.2.1:51820 10.0.0.2/32 25") {
		t.Errorf("after absent:\n%s", got)
	}

	// Bad input: exit 1 naming the path; wg show unchanged.
	before = wgConfig(t, w, "wg0")
	badKey := writeFile(t, dir, "bad.key", "bm90LWEta2V5\n")
	for _, c := range []struct{ ifc, want string }{
		{`"wg0":{"listen_port":1,"peers":{"xyz":{}}}`, `plugins.wireguard.interfaces.wg0.peers["xyz"]`},
		{`"wg0":{"listen_port":1,"private_key_file":"` + badKey + `"}`, badKey},
		{`"wg0":{"listen_port":1,"private_key_file":"` + dir + `/missing.key"}`, dir + "/missing.key"},
		{`"wg0":{"listen_port":1,"peers":{"` + a + `":{"allowed_ips":["10.0.0.0/40"]}}}`, "allowed_ips[0]"},
		{`"wg0":{"listen_port":1},"a-very-long-name0":{}`, `interfaces["a-very-long-name0"]`},
	} {
		f := writeFile(t, dir, "bad.json", `{"version":1,"plugins":{"wireguard":{"interfaces":{`+c.ifc+`}}}}`)
		r := wgRun(t, w, sd, "apply", "--yes", f)
		wantCode(t, r, 1, "apply "+c.ifc)
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("apply %s: stderr lacks %s:\n%s", c.ifc, c.want, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, "bm90LWEta2V5") {
			t.Errorf("output quotes the bad key file's content:\n%s", r)
		}
	}
	if got := wgConfig(t, w, "wg0"); got != before {
		t.Errorf("bad input changed wg0:\n%s\nwas\n%s", got, before)
	}

	// A missing interface cannot be created on this kernel (if it has no
	// wireguard link type): the message says what to do.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := w.Exec(ctx, "ip", "link", "add", "wgprobe", "type", "wireguard")
	cancel()
	if err == nil {
		t.Log("this kernel has the wireguard link type; creation is not an error here")
		return
	}
	f := writeFile(t, dir, "new.json", `{"version":1,"plugins":{"wireguard":{"interfaces":{"wgnew":{"listen_port":4444}}}}}`)
	r = wgRun(t, w, sd, "apply", "--yes", f)
	wantCode(t, r, 1, "apply creating wgnew")
	if !strings.Contains(r.stderr, "this kernel has no wireguard link type; start a userspace implementation such as wireguard-go wgnew first") {
		t.Errorf("creation error:\n%s", r)
	}
}

// planOpsIn is planOps for a binary run inside the bed.
func planOpsIn(t *testing.T, w *testbed.WireGuard, args ...string) []string {
	t.Helper()
	r := wgRun(t, w, append(args, "-o", "json")...)
	if r.code != 0 && r.code != 2 {
		t.Fatalf("diff: %s", r)
	}
	var p struct {
		Ops []struct {
			ID string `json:"id"`
		} `json:"ops"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("diff -o json: %v\n%s", err, r)
	}
	ids := []string{}
	for _, o := range p.Ops {
		ids = append(ids, o.ID)
	}
	if (r.code == 0) != (len(ids) == 0) {
		t.Fatalf("exit code %d disagrees with %d ops", r.code, len(ids))
	}
	return ids
}

// The secrets test: with a real device and real key files, run
// query (json, yaml), diff, apply (one that succeeds, one that fails and
// rolls back), the audit log commands and the snapshot commands; neither
// the private key nor the preshared key, in any encoding, appears in any
// output or in any file under the state directory.
func TestTestbedWireGuardSecretsNeverShown(t *testing.T) {
	w := testbed.NewWireGuard(t, "wg0", "wg1")
	dir := t.TempDir()
	stateDir := dir + "/state"
	sd := "--state-dir=" + stateDir
	priv, psk, priv1 := newKey(t), newKey(t), newKey(t)
	keyFile := writeFile(t, dir, "wg0.key", priv.String()+"\n")
	key1 := writeFile(t, dir, "wg1.key", priv1.String())
	pskFile := writeFile(t, dir, "peer.psk", psk.String()+"\n")
	peer := newKey(t).PublicKey().String()
	doc := writeFile(t, dir, "wg.json", fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{
		"wg0":{"private_key_file":%q,"listen_port":51820,"peers":{%q:{"endpoint":"192.0.2.1:51820","allowed_ips":["10.0.0.2/32"],"preshared_key_file":%q}}},
		"wg1":{"private_key_file":%q}}}}}`, keyFile, peer, pskFile, key1))

	var outputs []string
	do := func(code int, args ...string) result {
		t.Helper()
		r := wgRun(t, w, append([]string{sd}, args...)...)
		wantCode(t, r, code, strings.Join(args, " "))
		outputs = append(outputs, strings.Join(args, " ")+"\n"+r.stdout+r.stderr)
		return r
	}
	do(2, "diff", doc)
	do(2, "diff", doc, "-o", "json")
	do(0, "apply", "--yes", doc)
	d := wgOracle(t, w, "show", "wg0", "dump")
	if !strings.Contains(d, priv.String()) || !strings.Contains(d, psk.String()) {
		t.Fatalf("the keys were not applied (oracle):\n%s", d)
	}
	do(0, "diff", doc)
	do(0, "query", "-p", "wireguard", "-o", "json")
	do(0, "query", "-p", "wireguard", "-o", "yaml")
	do(0, "query", "-p", "wireguard")
	// A failing apply: wg0 changes, wgnew cannot be created, all rolled
	// back; the rollback's records land in the audit log too.
	fail := writeFile(t, dir, "fail.json", fmt.Sprintf(`{"version":1,"plugins":{"wireguard":{"interfaces":{
		"wg0":{"private_key_file":%q,"listen_port":51821,"peers":{%q:{"preshared_key_file":%q}}},
		"wgnew":{"private_key_file":%q}}}}}`, keyFile, peer, pskFile, key1))
	if r := wgRun(t, w, sd, "apply", "--yes", fail); r.code == 0 {
		t.Log("this kernel created wgnew")
		outputs = append(outputs, r.stdout+r.stderr)
	} else {
		outputs = append(outputs, r.stdout+r.stderr)
	}
	r := do(0, "audit", "log", "-o", "json")
	var entries []json.RawMessage
	_ = json.Unmarshal([]byte(r.stdout), &entries)
	if len(entries) < 2 {
		t.Errorf("audit log has %d entries, want the applies recorded:\n%s", len(entries), r.stdout)
	}
	do(0, "audit", "log")
	for i := range entries { // entries count from 0
		do(0, "audit", "show", fmt.Sprint(i))
		do(0, "audit", "show", fmt.Sprint(i), "-o", "json")
	}
	do(0, "history", "--plugin", "wireguard")
	do(0, "audit", "log", "--plugin", "wireguard", "-o", "json")
	do(0, "audit", "verify")
	r = do(0, "snapshot", "list", "-o", "json")
	var snaps []struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(r.stdout), &snaps)
	if len(snaps) == 0 {
		t.Errorf("no snapshots listed:\n%s", r.stdout)
	}
	for _, s := range snaps {
		do(0, "snapshot", "show", s.ID)
	}
	do(0, "snapshot", "create", "-p", "wireguard")

	secrets := map[string]wgtypes.Key{"wg0 private key": priv, "wg1 private key": priv1, "preshared key": psk}
	check := func(where string, b []byte) {
		t.Helper()
		for what, k := range secrets {
			for _, form := range []string{k.String(), strings.TrimRight(k.String(), "="), fmt.Sprintf("%x", k[:])} {
				if bytes.Contains(b, []byte(form)) {
					t.Errorf("the %s appears in %s", what, where)
				}
			}
			if bytes.Contains(b, k[:]) {
				t.Errorf("the %s (raw bytes) appears in %s", what, where)
			}
		}
	}
	for _, o := range outputs {
		check("the output of `op-dbus "+strings.SplitN(o, "\n", 2)[0]+"`", []byte(o))
	}
	files := 0
	err := filepath.WalkDir(stateDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		check(p, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Errorf("only %d files under the state dir: the audit log and snapshots were not written", files)
	}
	// The public key is shown, so the check above is not vacuous.
	if !strings.Contains(strings.Join(outputs, ""), priv.PublicKey().String()) {
		t.Errorf("no output shows the public key; query or plan lost it")
	}
}
