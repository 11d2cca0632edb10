package main

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// nmBed starts NetworkManager in its own namespaces; op-dbus runs on the
// host and reaches it over the bed's private system bus.
func nmBed(t *testing.T) (*testbed.NetworkManager, []string) {
	nm := testbed.NewNetworkManager(t)
	return nm, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + nm.BusAddress}
}

// nmOracle reads one field of one profile with nmcli in the bed.
func nmOracle(t *testing.T, nm *testbed.NetworkManager, field, conn string) string {
	t.Helper()
	out, err := nm.Nmcli(context.Background(), "-g", field, "connection", "show", conn)
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(out)
}

// nmAddrs polls `ip -j addr show dev IF` in the bed until it has want
// (IPv4, global) or 20s pass, and returns what it last saw.
func nmAddrs(t *testing.T, nm *testbed.NetworkManager, ifname string, want ...string) []string {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, err := nm.Exec(context.Background(), "ip", "-j", "-4", "addr", "show", "dev", ifname)
		got = nil
		if err == nil {
			var links []struct {
				AddrInfo []struct {
					Local     string `json:"local"`
					Prefixlen int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if json.Unmarshal([]byte(out), &links) == nil && len(links) == 1 {
				for _, a := range links[0].AddrInfo {
					got = append(got, a.Local+"/"+strconv.Itoa(a.Prefixlen))
				}
			}
		}
		if slices.Equal(got, want) {
			break
		}
	}
	return got
}

func TestTestbedNetworkManagerApplyQueryRestore(t *testing.T) {
	nm, env := nmBed(t)
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	doc := writeFile(t, dir, "net.json", `{"version": 1, "plugins": {"networkmanager": {"connections": {
		"br9": {"type": "bridge", "interface_name": "br9", "active": true, "bridge": {"stp": false},
			"ipv4": {"method": "manual", "addresses": ["10.99.0.1/24"]}, "ipv6": {"method": "disabled"}}}}}}`)

	r := run(t, env, "", sd, "diff", doc)
	wantCode(t, r, 2, "diff before apply")
	if !strings.Contains(r.stdout, "create br9 and activate it") {
		t.Errorf("plan does not say what it does:\n%s", r.stdout)
	}
	r = run(t, env, "", sd, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply")
	if got := nmOracle(t, nm, "GENERAL.STATE", "br9"); got != "activated" {
		t.Fatalf("nmcli: br9 %q, want activated\n%s", got, r)
	}
	if got := nmAddrs(t, nm, "br9", "10.99.0.1/24"); !slices.Equal(got, []string{"10.99.0.1/24"}) {
		t.Fatalf("ip: br9 has %v", got)
	}
	if ops := planOps(t, env, sd, "diff", doc); len(ops) != 0 {
		t.Fatalf("after apply: %v", ops)
	}

	r = run(t, env, "", sd, "query", "-p", "networkmanager")
	wantCode(t, r, 0, "query")
	now := writeFile(t, dir, "now.json", r.stdout)
	if ops := planOps(t, env, sd, "diff", now); len(ops) != 0 {
		t.Fatalf("query of an unchanged host plans %v", ops)
	}

	ctx := context.Background()
	for _, args := range [][]string{
		{"connection", "modify", "br9", "ipv4.addresses", "10.99.7.1/24", "bridge.stp", "yes"},
		{"connection", "up", "br9"},
	} {
		if out, err := nm.Nmcli(ctx, args...); err != nil {
			t.Fatalf("nmcli %v: %v %s", args, err, out)
		}
	}
	if got := nmAddrs(t, nm, "br9", "10.99.7.1/24"); !slices.Equal(got, []string{"10.99.7.1/24"}) {
		t.Fatalf("out-of-band change not seen by ip: %v", got)
	}
	if ops := planOps(t, env, sd, "diff", now); !slices.Equal(ops, []string{"networkmanager/transaction"}) {
		t.Fatalf("after drift: %v", ops)
	}
	r = run(t, env, "", sd, "apply", "--yes", now)
	wantCode(t, r, 0, "restore")
	if got := nmAddrs(t, nm, "br9", "10.99.0.1/24"); !slices.Equal(got, []string{"10.99.0.1/24"}) {
		t.Errorf("not restored: ip shows %v", got)
	}
	if got := nmOracle(t, nm, "bridge.stp", "br9"); got != "no" {
		t.Errorf("bridge.stp %q after restore", got)
	}
	if ops := planOps(t, env, sd, "diff", now); len(ops) != 0 {
		t.Fatalf("after restore: %v", ops)
	}

	absent := writeFile(t, dir, "absent.json", `{"version": 1, "plugins": {"networkmanager": {"connections": {"br9": {"state": "absent"}}}}}`)
	r = run(t, env, "", sd, "apply", "--yes", absent)
	wantCode(t, r, 0, "delete")
	if got := nmOracle(t, nm, "connection.id", "br9"); !strings.HasPrefix(got, "error:") {
		t.Errorf("br9 still exists: %q", got)
	}
}

// Bad input is refused before anything is touched, naming the path.
func TestTestbedNetworkManagerBadInput(t *testing.T) {
	nm, env := nmBed(t)
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	for _, tc := range []struct{ conn, path string }{
		{`"br9": {"type": "bridge", "ipv4": {"method": "manual", "addresses": ["10.99.0.300/24"]}}`, `connections["br9"].ipv4.addresses[0]`},
		{`"br9": {"type": "bridge", "interface_name": "averyveryverylongname"}`, `connections["br9"].interface_name`},
		{`"br9": {"type": "bridge", "interface_name": "br/9"}`, `connections["br9"].interface_name`},
		{`"br9": {"type": "bridge", "interface_name": "br9", "controller": "br9", "port_type": "bridge"}`, `connections["br9"].controller`},
		{`"br9": {"type": "bridge", "mtu": 100000}`, `connections["br9"].mtu`},
		{`"br9": {"type": "bridge", "mtu": 0}`, `connections["br9"].mtu`},
		{`"br9": {"type": "bridge", "ipv4": {"method": "static"}}`, `connections["br9"].ipv4.method`},
	} {
		doc := writeFile(t, dir, "bad.json", `{"version": 1, "plugins": {"networkmanager": {"connections": {`+tc.conn+`}}}}`)
		r := run(t, env, "", sd, "apply", "--yes", doc)
		wantCode(t, r, 1, tc.conn)
		if !strings.Contains(r.stderr, "plugins.networkmanager."+tc.path) {
			t.Errorf("%s: error does not name %s:\n%s", tc.conn, tc.path, r.stderr)
		}
	}
	out, err := nm.Nmcli(context.Background(), "-t", "-f", "NAME", "connection", "show")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("profiles after refused documents: %q %v", out, err)
	}
}

// A failing activation inside the transaction is rolled back by
// NetworkManager's checkpoint: exit 1, the error names the profile, and
// the earlier profile keeps its address.
func TestTestbedNetworkManagerFailureRollsBack(t *testing.T) {
	nm, env := nmBed(t)
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	good := writeFile(t, dir, "good.json", `{"version": 1, "plugins": {"networkmanager": {"connections": {
		"br9": {"type": "bridge", "interface_name": "br9", "active": true,
			"ipv4": {"method": "manual", "addresses": ["10.99.0.1/24"]}, "ipv6": {"method": "disabled"}}}}}}`)
	wantCode(t, run(t, env, "", sd, "apply", "--yes", good), 0, "apply good")
	bad := writeFile(t, dir, "bad.json", `{"version": 1, "plugins": {"networkmanager": {"connections": {
		"br9": {"ipv4": {"addresses": ["10.99.1.1/24"]}},
		"ghost": {"type": "ethernet", "interface_name": "ghost0", "active": true}}}}}`)
	r := run(t, env, "", sd, "apply", "--yes", bad)
	wantCode(t, r, 1, "apply with an impossible activation")
	all := r.stdout + r.stderr
	for _, w := range []string{`activate connection "ghost"`, "rolled back"} {
		if !strings.Contains(all, w) {
			t.Errorf("output lacks %q:\n%s", w, r)
		}
	}
	if got := nmOracle(t, nm, "connection.id", "ghost"); !strings.HasPrefix(got, "error:") {
		t.Errorf("ghost profile left: %q", got)
	}
	if got := nmOracle(t, nm, "ipv4.addresses", "br9"); got != "10.99.0.1/24" {
		t.Errorf("br9 ipv4.addresses %q after rollback", got)
	}
	if got := nmAddrs(t, nm, "br9", "10.99.0.1/24"); !slices.Equal(got, []string{"10.99.0.1/24"}) {
		t.Errorf("ip: br9 has %v after rollback", got)
	}
	if ops := planOps(t, env, sd, "diff", good); len(ops) != 0 {
		t.Errorf("after rollback the good document plans %v", ops)
	}
}
