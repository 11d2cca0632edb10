package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

func ovsctl(t *testing.T, o *testbed.OVS, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := o.Vsctl(ctx, args...)
	if err != nil {
		t.Fatalf("ovs-vsctl %v: %v", args, err)
	}
	return strings.TrimSpace(out)
}

// runInBed runs op-dbus inside the bed's namespaces (so it sees the
// devices ovs-vswitchd makes there).
func runInBed(t *testing.T, n *testbed.NetNS, args ...string) result {
	t.Helper()
	return runInBedEnv(t, n, nil, args...)
}

// runInBedEnv is runInBed with extra environment variables.
func runInBedEnv(t *testing.T, n *testbed.NetNS, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var full []string
	if env != nil {
		full = append(os.Environ(), env...)
	}
	return runCmd(t, n.Command(ctx, full, append([]string{binary}, args...)...))
}

// Pure OVSDB through the binary on the host (the socket is a file):
// diff, apply, verify, query round trip, drift and restore, with
// ovs-vsctl as the oracle.
func TestTestbedOVSApplyVerifyDriftQuery(t *testing.T) {
	o := testbed.NewOVS(t, testbed.OVSDBOnly())
	ovsctl(t, o, "add-br", "keep", "--", "add-port", "keep", "k1")
	dir := t.TempDir()
	g := []string{"--ovsdb", o.DBAddress, "--state-dir=" + dir + "/state"}
	doc := writeFile(t, dir, "ovs.json", `{"version": 1, "plugins": {"ovs": {"bridges": {
		"br0": {"datapath_type": "netdev", "fail_mode": "secure", "external_ids": {"role": "uplink"},
			"ports": {"p1": {"tag": 10}, "p2": {"trunks": [20, 30]}}}}}}}`)

	r := run(t, nil, "", append(g, "diff", doc)...)
	wantCode(t, r, 2, "diff before apply")
	if !strings.Contains(r.stdout, "OVSDB transaction: add bridge br0 (3 ports)") {
		t.Errorf("plan does not describe the transaction:\n%s", r.stdout)
	}
	r = run(t, nil, "", append(g, "apply", "--yes", doc)...)
	wantCode(t, r, 0, "apply")
	if got := ovsctl(t, o, "list-ports", "br0"); got != "p1\np2" {
		t.Errorf("list-ports br0 = %q", got)
	}
	if got := ovsctl(t, o, "get", "Port", "p1", "tag"); got != "10" {
		t.Errorf("p1 tag = %q", got)
	}
	if got := ovsctl(t, o, "get", "Bridge", "br0", "fail_mode", "external_ids:role"); got != "secure\nuplink" {
		t.Errorf("br0 fail_mode, role = %q", got)
	}
	if got := ovsctl(t, o, "list-ports", "keep"); got != "k1" {
		t.Errorf("unnamed bridge keep changed: %q", got)
	}
	if ops := planOps(t, nil, append(g, "diff", doc)...); len(ops) != 0 {
		t.Fatalf("plan after apply: %v", ops)
	}

	// Query output round-trips and restores after drift.
	r = run(t, nil, "", append(g, "query", "-p", "ovs")...)
	wantCode(t, r, 0, "query")
	now := writeFile(t, dir, "now.json", r.stdout)
	wantCode(t, run(t, nil, "", append(g, "validate", now)...), 0, "validate query output")
	if ops := planOps(t, nil, append(g, "diff", now)...); len(ops) != 0 {
		t.Fatalf("query output plans ops on an unchanged host: %v", ops)
	}
	ovsctl(t, o, "set", "Port", "p1", "tag=11", "--", "del-port", "keep", "k1")
	r = run(t, nil, "", append(g, "verify", doc)...)
	wantCode(t, r, 2, "verify after drift")
	if !strings.Contains(r.stdout, `ovs.bridges["br0"].ports["p1"].tag desired 10, current 11`) {
		t.Errorf("verify does not name the drift:\n%s", r.stdout)
	}
	r = run(t, nil, "", append(g, "apply", "--yes", now)...)
	wantCode(t, r, 0, "apply the query capture")
	if got := ovsctl(t, o, "get", "Port", "p1", "tag"); got != "10" {
		t.Errorf("p1 tag = %q after restore", got)
	}
	if got := ovsctl(t, o, "list-ports", "keep"); got != "k1" {
		t.Errorf("k1 not restored: %q", got)
	}

	// Absent removes only what it names.
	abs := writeFile(t, dir, "absent.json", `{"version": 1, "plugins": {"ovs": {"bridges": {"br0": {"ports": {"p2": {"state": "absent"}}}}}}}`)
	wantCode(t, run(t, nil, "", append(g, "apply", "--yes", abs)...), 0, "apply absent")
	if got := ovsctl(t, o, "list-ports", "br0"); got != "p1" {
		t.Errorf("list-ports br0 = %q after p2 absent", got)
	}
}

// A missing socket, and a socket that answers garbage: a clear error that
// names the address, exit 1, nothing changed.
func TestTestbedOVSBadSocket(t *testing.T) {
	dir := t.TempDir()
	doc := writeFile(t, dir, "ovs.json", `{"version": 1, "plugins": {"ovs": {"bridges": {"br0": {}}}}}`)
	missing := filepath.Join(dir, "nope.sock")
	r := run(t, nil, "", "--ovsdb", "unix:"+missing, "--state-dir="+dir+"/state", "apply", "--yes", doc)
	wantCode(t, r, 1, "apply with no ovsdb-server")
	for _, w := range []string{"ovsdb-server not reachable at unix:" + missing, "start openvswitch-switch or pass --ovsdb"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r)
		}
	}
	sock := filepath.Join(dir, "g.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 1024))
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\ngarbage\x00\x01"))
			c.Close()
		}
	}()
	r = run(t, nil, "", "--ovsdb", "unix:"+sock, "--state-dir="+dir+"/state", "diff", doc)
	wantCode(t, r, 1, "diff against a garbage peer")
	if !strings.Contains(r.stderr, "ovsdb-server at unix:"+sock) || !strings.Contains(r.stderr, "does not speak OVSDB") {
		t.Errorf("stderr does not explain the garbage peer:\n%s", r)
	}
}

// With ovs-vswitchd, run inside the bed: internal ports become devices;
// an interface ovs-vswitchd rejects fails the apply, which rolls back.
func TestTestbedOVSVswitchdApplyAndRollback(t *testing.T) {
	o := testbed.NewOVS(t)
	dir := o.Dir
	g := []string{"--ovsdb", o.DBAddress, "--state-dir=" + dir + "/state"}
	doc := writeFile(t, dir, "ovs.json", `{"version": 1, "plugins": {"ovs": {"bridges": {
		"br0": {"datapath_type": "netdev", "ports": {"vp1": {"interfaces": {"vp1": {"type": "internal", "mtu_request": 1400}}}}}}}}}`)
	r := runInBed(t, o.NetNS, append(g, "apply", "--yes", doc)...)
	wantCode(t, r, 0, "apply")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := o.NetNS.Exec(ctx, "ip", "-j", "link", "show", "dev", "vp1")
	if err != nil {
		t.Fatalf("vp1 is not a device: %v", err)
	}
	var links []struct {
		MTU int `json:"mtu"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].MTU != 1400 {
		t.Errorf("ip -j link show vp1 = %s (%v)", out, err)
	}
	bad := writeFile(t, dir, "bad.json", `{"version": 1, "plugins": {"ovs": {"bridges": {
		"br0": {"fail_mode": "secure", "ports": {"vp2": {"interfaces": {"vp2": {"type": "internal"}}}, "bad0": {"interfaces": {"bad0": {"type": "no-such-type"}}}}}}}}}`)
	r = runInBed(t, o.NetNS, append(g, "apply", "--yes", bad)...)
	wantCode(t, r, 1, "apply with an interface ovs-vswitchd rejects")
	for _, w := range []string{`bridges["br0"].ports["bad0"].interfaces["bad0"]: ovs-vswitchd:`, "rolled back"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r)
		}
	}
	if got := ovsctl(t, o, "list-ports", "br0"); got != "vp1" {
		t.Errorf("list-ports br0 after rollback = %q", got)
	}
	// An unset fail_mode is standalone to OVS and to query; rollback
	// restores it as an explicit standalone.
	if got := ovsctl(t, o, "get", "Bridge", "br0", "fail_mode"); got != "standalone" {
		t.Errorf("fail_mode after rollback = %q, want standalone", got)
	}
	if _, err := o.NetNS.Exec(ctx, "ip", "link", "show", "dev", "vp2"); err == nil {
		t.Error("vp2 device still exists after rollback")
	}
}
