package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// Network end to end: the op-dbus binary runs inside a network namespace
// bed (so the plugin's netlink socket and ICMP probes see only the bed),
// and `ip -j` inside the bed is the oracle.

// netRun runs op-dbus inside the bed with its own state dir.
func netRun(t *testing.T, bed *testbed.NetNS, stateDir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return runCmd(t, bed.Command(ctx, nil, append([]string{binary, "--state-dir=" + stateDir}, args...)...))
}

func netSh(t *testing.T, bed *testbed.NetNS, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := bed.Exec(ctx, strings.Fields(c)...)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
}

// netView is the bed as iproute2 shows it: per link kind, flags, mtu,
// master and addresses (IPv6 link-local left out, as the plugin does), and
// the routes of every table that are not the kernel's own.
type netView struct {
	Links  map[string]string
	Routes []string
}

func netOracle(t *testing.T, bed *testbed.NetNS) netView {
	t.Helper()
	get := func(out any, args ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := bed.Exec(ctx, append([]string{"ip", "-j"}, args...)...)
		if err != nil {
			t.Fatalf("ip -j %v: %v", args, err)
		}
		if err := json.Unmarshal([]byte(s), out); err != nil {
			t.Fatalf("ip -j %v: %v\n%s", args, err, s)
		}
	}
	var links []struct {
		Name   string   `json:"ifname"`
		Flags  []string `json:"flags"`
		MTU    int      `json:"mtu"`
		Master string   `json:"master"`
		Addr   string   `json:"address"`
		Info   struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
		AddrInfo []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
			Scope  string `json:"scope"`
		} `json:"addr_info"`
	}
	get(&links, "-d", "addr", "show")
	v := netView{Links: map[string]string{}}
	for _, l := range links {
		up := slices.Contains(l.Flags, "UP")
		var addrs []string
		for _, a := range l.AddrInfo {
			if a.Family == "inet6" && a.Scope == "link" {
				continue
			}
			addrs = append(addrs, fmt.Sprintf("%s/%d", a.Local, a.Prefix))
		}
		sort.Strings(addrs)
		v.Links[l.Name] = fmt.Sprintf("kind=%s up=%v mtu=%d master=%s mac=%s addrs=%v", l.Info.Kind, up, l.MTU, l.Master, l.Addr, addrs)
	}
	for _, fam := range []string{"-4", "-6"} {
		var routes []map[string]any
		get(&routes, fam, "route", "show", "table", "all")
		for _, r := range routes {
			if r["table"] == "local" || r["protocol"] == "kernel" {
				continue
			}
			delete(r, "flags")
			b, _ := json.Marshal(r)
			v.Routes = append(v.Routes, string(b))
		}
	}
	sort.Strings(v.Routes)
	return v
}

func sameNet(t *testing.T, what string, got, want netView) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s (ip -j):\n got %+v\nwant %+v", what, got, want)
	}
}

func netDoc(t *testing.T, dir, name, network string) string {
	return writeFile(t, dir, name, `{"version": 1, "plugins": {"network": `+network+`}}`)
}

func TestTestbedNetworkQueryApplyDriftRestore(t *testing.T) {
	bed := testbed.NewNetNS(t)
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")

	// Query of an empty bed: lo only, matching ip -j.
	r := netRun(t, bed, sd, "query", "-p", "network")
	wantCode(t, r, 0, "query")
	var q struct {
		Plugins struct {
			Network struct {
				Interfaces []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					State string `json:"state"`
				} `json:"interfaces"`
			} `json:"network"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	if ifs := q.Plugins.Network.Interfaces; len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Type != "loopback" || ifs[0].State != "up" {
		t.Fatalf("query of an empty bed: %s", r.stdout)
	}

	doc := netDoc(t, dir, "net.json", `{"interfaces":[
		{"name":"br0","type":"bridge","ipv4":{"address":[{"ip":"10.10.0.1","prefix_length":24}]},"ipv6":{"address":[{"ip":"2001:db8:10::1","prefix_length":64}]}},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br0","mtu":1400},
		{"name":"vb","ipv4":{"address":[{"ip":"10.11.0.1","prefix_length":24}]}}],
		"routes":{"config":[
			{"destination":"10.20.0.0/16","next_hop_address":"10.10.0.254","metric":50},
			{"destination":"0.0.0.0/0","next_hop_address":"10.10.0.254","table_id":100,"metric":10}]}}`)
	r = netRun(t, bed, sd, "diff", doc)
	wantCode(t, r, 2, "diff before apply")
	for _, w := range []string{"create bridge br0", "create veth va with peer vb", "make va a port of br0", "add route 10.20.0.0/16 via 10.10.0.254"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, r.stdout)
		}
	}
	r = netRun(t, bed, sd, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply")
	if !strings.Contains(r.stdout, "Verifying... ok") {
		t.Errorf("no verification:\n%s", r)
	}
	v := netOracle(t, bed)
	if !strings.Contains(v.Links["br0"], "kind=bridge up=true") || !strings.Contains(v.Links["br0"], "addrs=[10.10.0.1/24 2001:db8:10::1/64]") {
		t.Errorf("br0: %s", v.Links["br0"])
	}
	if !strings.Contains(v.Links["va"], "kind=veth up=true mtu=1400 master=br0") {
		t.Errorf("va: %s", v.Links["va"])
	}
	if !strings.Contains(v.Links["vb"], "addrs=[10.11.0.1/24]") {
		t.Errorf("vb: %s", v.Links["vb"])
	}
	routes := strings.Join(v.Routes, "\n")
	for _, w := range []string{`"dst":"10.20.0.0/16","gateway":"10.10.0.254"`, `"dst":"default","gateway":"10.10.0.254"`, `"table":"100"`, `"metric":50`} {
		if !strings.Contains(routes, w) {
			t.Errorf("routes lack %s:\n%s", w, routes)
		}
	}
	if ops := netPlanOps(t, bed, sd, doc); len(ops) != 0 {
		t.Fatalf("second plan: %v", ops)
	}

	// Capture the whole namespace; it plans nothing.
	r = netRun(t, bed, sd, "query", "-p", "network")
	wantCode(t, r, 0, "query")
	captured := writeFile(t, dir, "captured.json", r.stdout)
	if ops := netPlanOps(t, bed, sd, captured); len(ops) != 0 {
		t.Fatalf("query → diff: %v", ops)
	}
	before := netOracle(t, bed)

	// Out-of-band changes; the captured query restores them.
	netSh(t, bed,
		"ip route del 10.20.0.0/16",
		"ip link set va mtu 1300",
		"ip addr del 10.10.0.1/24 dev br0", // takes the default route of table 100 along
		"ip addr add 10.10.9.1/24 dev br0",
		"ip link set va nomaster",
	)
	r = netRun(t, bed, sd, "verify", captured)
	wantCode(t, r, 2, "verify after drift")
	for _, w := range []string{`network.interfaces["va"].mtu desired 1400, current 1300`, `network.interfaces["br0"].ipv4.address`} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("verify lacks %q:\n%s", w, r.stdout)
		}
	}
	r = netRun(t, bed, sd, "apply", "--yes", captured)
	wantCode(t, r, 0, "restore")
	sameNet(t, "after restore", netOracle(t, bed), before)

	// absent removes only what it names.
	netSh(t, bed, "ip link add br1 type bridge")
	before = netOracle(t, bed)
	absent := netDoc(t, dir, "absent.json", `{"interfaces":[{"name":"br1","state":"absent"}],"routes":{"config":[{"destination":"0.0.0.0/0","table_id":100,"state":"absent"}]}}`)
	r = netRun(t, bed, sd, "apply", "--yes", absent)
	wantCode(t, r, 0, "absent")
	after := netOracle(t, bed)
	delete(before.Links, "br1")
	before.Routes = slices.DeleteFunc(before.Routes, func(s string) bool { return strings.Contains(s, `"table":"100"`) })
	sameNet(t, "after absent", after, before)
}

func netPlanOps(t *testing.T, bed *testbed.NetNS, sd, doc string) []string {
	t.Helper()
	r := netRun(t, bed, sd, "diff", "-o", "json", doc)
	if r.code != 0 && r.code != 2 {
		t.Fatalf("diff: %s", r)
	}
	var p struct {
		Ops []struct {
			ID string `json:"id"`
		} `json:"ops"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	var ids []string
	for _, o := range p.Ops {
		ids = append(ids, o.ID)
	}
	if (r.code == 0) != (len(ids) == 0) {
		t.Fatalf("exit %d with %d ops", r.code, len(ids))
	}
	return ids
}

// Every bad input is exit 1, names its path, and changes nothing.
func TestTestbedNetworkBadInput(t *testing.T) {
	bed := testbed.NewNetNS(t)
	netSh(t, bed, "ip link add br0 type bridge", "ip addr add 10.0.0.1/24 dev br0", "ip link add br1 type bridge")
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	before := netOracle(t, bed)
	cases := []struct{ name, network, want string }{
		{"cidr", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.0.0.256","prefix_length":24}]}}]}`, `plugins.network.interfaces[0].ipv4.address[0].ip: invalid IP address "10.0.0.256"`},
		{"prefix", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.0.0.2","prefix_length":40}]}}]}`, `interfaces[0].ipv4.address[0].prefix_length: prefix length 40 is out of range 1..32`},
		{"route cidr", `{"routes":{"config":[{"destination":"10.1.0.0/33","next_hop_interface":"br0"}]}}`, `plugins.network.routes.config[0].destination: invalid CIDR "10.1.0.0/33"`},
		{"mtu 0", `{"interfaces":[{"name":"br0","mtu":0}]}`, `plugins.network.interfaces[0].mtu: mtu 0 is out of range 68..65535`},
		{"mtu 100000", `{"interfaces":[{"name":"br0","mtu":100000}]}`, `plugins.network.interfaces[0].mtu: mtu 100000 is out of range 68..65535`},
		{"long name", `{"interfaces":[{"name":"averyveryverylongname","type":"bridge"}]}`, `plugins.network.interfaces[0].name: interface name "averyveryverylongname" is 21 bytes; the kernel allows at most 15`},
		{"slash", `{"interfaces":[{"name":"br/1","type":"bridge"}]}`, `plugins.network.interfaces[0].name: interface name "br/1" contains '/'`},
		{"own port", `{"interfaces":[{"name":"br0","controller":"br0"}]}`, `plugins.network.interfaces[0].controller: "br0" cannot be a port of itself`},
		{"two bridges", `{"interfaces":[{"name":"br0","bridge":{"port":[{"name":"vz"}]}},{"name":"br1","bridge":{"port":[{"name":"vz"}]}}]}`, `plugins.network.interfaces[1].bridge.port[0].name: "vz" is already a port of bridge "br0"`},
		{"listed twice", `{"interfaces":[{"name":"br0","mtu":1400},{"name":"br0","mtu":1300}]}`, `plugins.network.interfaces[1].name: interface "br0" is listed twice`},
		{"veth no peer", `{"interfaces":[{"name":"vq","type":"veth"}]}`, `plugins.network.interfaces[0].veth.peer: a veth needs veth.peer`},
		// Found only against the host: a plan error, before any change.
		{"type clash", `{"interfaces":[{"name":"br0","type":"veth","veth":{"peer":"x0"}}]}`, `interfaces["br0"].type: br0 exists as a bridge, not a veth`},
		// Found when applying (another plugin might have made it): the
		// op fails and what ran before it is rolled back.
		{"missing controller", `{"interfaces":[{"name":"br1","mtu":1400,"controller":"nobr0"}]}`, `make br1 a port: controller link nobr0 does not exist`},
		{"missing link", `{"interfaces":[{"name":"nope0","ipv4":{"address":[{"ip":"10.5.0.1","prefix_length":24}]}}]}`, `link nope0 does not exist: this document does not create it`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := netDoc(t, dir, "bad.json", c.network)
			r := netRun(t, bed, sd, "apply", "--yes", doc)
			wantCode(t, r, 1, "bad input")
			if !strings.Contains(r.stderr+r.stdout, c.want) {
				t.Errorf("output lacks %q:\n%s", c.want, r)
			}
			sameNet(t, "after bad input", netOracle(t, bed), before)
		})
	}
}

// This kernel has no dummy link kind: detect it, then the apply must fail
// saying so and change nothing. Where the kernel has it, it must work.
func TestTestbedNetworkMissingKernelKind(t *testing.T) {
	bed := testbed.NewNetNS(t)
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := bed.Exec(ctx, "ip", "link", "add", "probe0", "type", "dummy")
	hasDummy := err == nil
	doc := netDoc(t, dir, "dummy.json", `{"interfaces":[{"name":"d0","type":"dummy"}]}`)
	before := netOracle(t, bed)
	r := netRun(t, bed, sd, "apply", "--yes", doc)
	if hasDummy {
		t.Log("this kernel has the dummy link kind; checking that apply creates one")
		wantCode(t, r, 0, "apply dummy")
		if !strings.Contains(netOracle(t, bed).Links["d0"], "kind=dummy") {
			t.Fatal("d0 not created")
		}
		return
	}
	t.Logf("this kernel has no dummy link kind (ip: %s); checking that apply says so", strings.TrimSpace(out))
	wantCode(t, r, 1, "apply dummy on a kernel without it")
	if !strings.Contains(r.stderr+r.stdout, "kernel has no dummy link type") {
		t.Errorf("no clear error:\n%s", r)
	}
	sameNet(t, "after failed dummy", netOracle(t, bed), before)
}

// THE SAFETY TEST through the binary: a second namespace is the peer at
// 10.99.0.2 behind a veth whose near end is a port of br0 (10.99.0.1/24).
// A document that re-addresses br0 and declares that the peer must still
// answer makes the apply fail its probe, roll back and verify the rollback;
// the peer answers again.
func TestTestbedNetworkProbeRollsBackBadReaddress(t *testing.T) {
	testbed.Program(t, "busybox", "busybox") // its ping is the reachability oracle
	bed := testbed.NewNetNS(t)
	peer := testbed.NewNetNS(t)
	netSh(t, bed,
		"ip link add br0 type bridge",
		"ip link add va type veth peer name vb",
		"ip link set va master br0",
		"ip addr add 10.99.0.1/24 dev br0",
		"ip link set br0 up",
		"ip link set va up",
	)
	if err := testbed.MoveLink(bed, "vb", peer); err != nil {
		t.Fatal(err)
	}
	netSh(t, peer, "ip addr add 10.99.0.2/24 dev vb", "ip link set vb up")
	ping := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := bed.Exec(ctx, "busybox", "ping", "-c", "1", "-W", "2", "10.99.0.2")
		return err == nil
	}
	if !ping() {
		t.Fatal("the peer does not answer before the apply")
	}
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	// The query names va's peer, though it lives in the other namespace.
	r := netRun(t, bed, sd, "query", "-p", "network")
	wantCode(t, r, 0, "query")
	var q struct {
		Plugins struct {
			Network struct {
				Interfaces []struct {
					Name string `json:"name"`
					Veth *struct {
						Peer string `json:"peer"`
					} `json:"veth"`
				} `json:"interfaces"`
			} `json:"network"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatal(err)
	}
	peerOK := false
	for _, i := range q.Plugins.Network.Interfaces {
		if i.Name == "va" && i.Veth != nil && i.Veth.Peer == "vb" {
			peerOK = true
		}
	}
	if !peerOK {
		t.Errorf("query does not name va's peer vb:\n%s", r.stdout)
	}
	// A probe that passes: the apply succeeds.
	good := netDoc(t, dir, "good.json", `{"interfaces":[{"name":"br0","mtu":1400}],"probes":[{"ping":"10.99.0.2","timeout":"2s"}]}`)
	r = netRun(t, bed, sd, "apply", "--yes", good)
	wantCode(t, r, 0, "apply with an answering probe")
	before := netOracle(t, bed)

	bad := netDoc(t, dir, "bad.json", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.98.0.1","prefix_length":24}]}}],
		"probes":[{"ping":"10.99.0.2","timeout":"1s"}]}`)
	r = netRun(t, bed, sd, "apply", "--yes", bad)
	if r.code == 0 {
		t.Fatalf("apply that cuts the peer off succeeded:\n%s", r)
	}
	t.Logf("the refused apply:\n%s", r)
	out := r.stdout + r.stderr
	for _, w := range []string{"Verifying... FAILED", "network.probes[0].ping", "no echo reply from 10.99.0.2 within 1s", "Verifying rollback... ok"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, r)
		}
	}
	after := netOracle(t, bed)
	if !strings.Contains(after.Links["br0"], "addrs=[10.99.0.1/24]") {
		t.Fatalf("br0 after rollback: %s", after.Links["br0"])
	}
	sameNet(t, "after rollback", after, before)
	if !ping() {
		t.Fatal("the peer does not answer after the rollback")
	}
}
