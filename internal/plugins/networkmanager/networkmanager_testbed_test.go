package networkmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// bed starts NetworkManager in its own namespaces and returns a plugin
// talking to it over the bed's bus, and an engine over that plugin.
func bed(t testing.TB) (*testbed.NetworkManager, *Plugin, *engine.Engine) {
	t.Helper()
	nm := testbed.NewNetworkManager(t)
	p := NewAt(nm.BusAddress)
	t.Cleanup(func() { p.Close() })
	e := engine.New([]plugin.Plugin{p})
	e.VerifyAttempts = 10
	e.VerifyDelay = 300 * time.Millisecond
	return nm, p, e
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// decode strictly decodes a networkmanager state, as the CLI does.
func decode(t testing.TB, p *Plugin, js string) *State {
	t.Helper()
	doc, err := state.Decode([]byte(`{"version":1,"plugins":{"networkmanager":`+js+`}}`), state.FormatJSON,
		state.Types{"networkmanager": p.NewState}, func(_ string, st any) state.Problems { return p.Validate(st) })
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return doc.Plugins["networkmanager"].(*State)
}

// apply plans and applies desired through the engine (apply, verify,
// rollback) and returns the result.
func apply(t testing.TB, e *engine.Engine, desired *State) *engine.Result {
	t.Helper()
	ctx := tctx(t)
	doc := &state.Document{Version: 1, Plugins: map[string]any{"networkmanager": desired}}
	plan, err := e.Plan(ctx, doc)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return e.Apply(ctx, doc, plan)
}

func mustApply(t testing.TB, e *engine.Engine, desired *State) {
	t.Helper()
	res := apply(t, e, desired)
	if !res.Success {
		b, _ := json.MarshalIndent(res, "", "  ")
		t.Fatalf("apply failed: %v\n%s", res.Err, b)
	}
}

func query(t testing.TB, p *Plugin) *State {
	t.Helper()
	st, err := p.Query(tctx(t))
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	return st.(*State)
}

// zeroOps fails unless desired plans no ops against the live state.
func zeroOps(t testing.TB, p *Plugin, desired *State) {
	t.Helper()
	ops, err := p.Plan(query(t, p), desired)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 0 {
		t.Fatalf("want zero ops, got %s: %v", ops[0].Description, ops[0].Changes)
	}
}

// nmcliConns is the oracle: nmcli -t connection show → name → "uuid type device".
func nmcliConns(t testing.TB, nm *testbed.NetworkManager) map[string][3]string {
	t.Helper()
	out, err := nm.Nmcli(tctx(t), "-t", "-f", "NAME,UUID,TYPE,DEVICE", "connection", "show")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][3]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, ":")
		if len(f) != 4 {
			t.Fatalf("nmcli line %q", l)
		}
		m[f[0]] = [3]string{f[1], f[2], f[3]}
	}
	return m
}

// nmcliField reads one field of one profile with nmcli -g.
func nmcliField(t testing.TB, nm *testbed.NetworkManager, field, conn string) string {
	t.Helper()
	out, err := nm.Nmcli(tctx(t), "-g", field, "connection", "show", conn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// ipAddrs is the netlink oracle: `ip -j addr show dev IF` in the bed,
// IPv4 and global IPv6 addresses in CIDR form ("" list if no such link).
func ipAddrs(t testing.TB, nm *testbed.NetworkManager, ifname string) ([]string, bool) {
	t.Helper()
	out, err := nm.Exec(tctx(t), "ip", "-j", "addr", "show", "dev", ifname)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, false
		}
		t.Fatal(err)
	}
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j addr: %v\n%s", err, out)
	}
	var got []string
	for _, a := range links[0].AddrInfo {
		if a.Scope == "global" {
			got = append(got, fmt.Sprintf("%s/%d", a.Local, a.Prefixlen))
		}
	}
	slices.Sort(got)
	return got, true
}

// waitAddrs polls ip until ifname has exactly want (global addresses).
func waitAddrs(t testing.TB, nm *testbed.NetworkManager, ifname string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, _ = ipAddrs(t, nm, ifname)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("ip addr show dev %s: %v, want %v", ifname, got, want)
}

// waitActivated polls nmcli until the profile is activated.
func waitActivated(t testing.TB, nm *testbed.NetworkManager, conn string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := nm.Nmcli(tctx(t), "-g", "GENERAL.STATE", "connection", "show", conn)
		if got = strings.TrimSpace(out); err == nil && got == "activated" {
			return
		}
	}
	t.Fatalf("nmcli: %s is %q, want activated", conn, got)
}

const br9Doc = `{"connections": {"br9": {"type": "bridge", "interface_name": "br9", "active": true,
	"bridge": {"stp": false},
	"ipv4": {"method": "manual", "addresses": ["10.99.0.1/24"]},
	"ipv6": {"method": "disabled"}}}}`

// A bridge profile with a manual address, created and activated by one
// apply: nmcli shows it active on br9, ip shows the address, query plans
// zero ops for the document and for itself, and Observe reports it.
func TestTestbedCreateBridge(t *testing.T) {
	nm, p, e := bed(t)
	desired := decode(t, p, br9Doc)
	ops, err := p.Plan(query(t, p), desired)
	if err != nil || len(ops) != 1 || ops[0].ID != TransactionID || !strings.Contains(ops[0].Description, "create br9 and activate it") {
		t.Fatalf("plan: %v %+v", err, ops)
	}
	mustApply(t, e, desired)

	c := nmcliConns(t, nm)["br9"]
	if c[1] != "bridge" || c[2] != "br9" {
		t.Fatalf("nmcli: br9 = %v, want bridge active on br9", c)
	}
	if got := nmcliField(t, nm, "bridge.stp", "br9"); got != "no" {
		t.Errorf("nmcli bridge.stp = %q, want no", got)
	}
	if got := nmcliField(t, nm, "GENERAL.STATE", "br9"); got != "activated" {
		t.Errorf("nmcli GENERAL.STATE = %q", got)
	}
	waitAddrs(t, nm, "br9", "10.99.0.1/24")

	zeroOps(t, p, desired)
	q := query(t, p)
	zeroOps(t, p, q)
	got := q.Connections["br9"]
	if got == nil || got.UUID != c[0] || got.Active == nil || !*got.Active || !slices.Equal(got.IPv4.Addresses, []string{"10.99.0.1/24"}) {
		b, _ := json.Marshal(got)
		t.Fatalf("query br9 = %s", b)
	}
	if d := q.Devices["br9"]; d == nil || d.Type != "bridge" || d.State != "activated" || !d.Managed || d.Connection != "br9" {
		t.Errorf("query devices[br9] = %+v", d)
	}
	// The query document round-trips through JSON and strict decoding.
	b, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	zeroOps(t, p, decode(t, p, string(b)))

	obs, err := p.Observe(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, o := range obs {
		if o.Interface == "br9" {
			found = true
			if o.Source != "networkmanager" || !o.Exists || o.State != "up" || o.MTU != 1500 || !o.KnownAddresses || !slices.Contains(o.Addresses, "10.99.0.1/24") || !o.KnownMaster || o.Master != "" {
				t.Errorf("observation of br9: %+v", o)
			}
		}
	}
	if !found {
		t.Errorf("no observation of br9 in %+v", obs)
	}
}

// Out-of-band changes (nmcli modify + up, nmcli delete) are undone by
// applying the captured query.
func TestTestbedDriftRestoredByCapturedQuery(t *testing.T) {
	nm, p, e := bed(t)
	mustApply(t, e, decode(t, p, `{"connections": {
		"br9": {"type": "bridge", "interface_name": "br9", "active": true, "bridge": {"stp": false},
			"ipv4": {"method": "manual", "addresses": ["10.99.0.1/24"], "dns": ["10.99.0.53"]}, "ipv6": {"method": "disabled"}},
		"br8": {"type": "bridge", "interface_name": "br8", "active": true, "autoconnect": false,
			"ipv4": {"method": "manual", "addresses": ["10.98.0.1/24", "10.98.1.1/24"], "gateway": "10.98.0.254"},
			"ipv6": {"method": "manual", "addresses": ["fd00:98::1/64"]}}}}`))
	captured, err := json.Marshal(query(t, p))
	if err != nil {
		t.Fatal(err)
	}
	uuid8 := nmcliConns(t, nm)["br8"][0]
	ctx := tctx(t)
	for _, args := range [][]string{
		{"connection", "modify", "br9", "ipv4.addresses", "10.99.5.1/24", "bridge.stp", "yes", "ipv4.dns", ""},
		{"connection", "up", "br9"},
		{"connection", "delete", "br8"},
	} {
		if out, err := nm.Nmcli(ctx, args...); err != nil {
			t.Fatalf("nmcli %v: %v\n%s", args, err, out)
		}
	}
	waitAddrs(t, nm, "br9", "10.99.5.1/24")
	waitActivated(t, nm, "br9")
	if _, ok := nmcliConns(t, nm)["br8"]; ok {
		t.Fatal("nmcli delete br8 did not delete it")
	}
	want := decode(t, p, string(captured))
	ops, err := p.Plan(query(t, p), want)
	if err != nil || len(ops) != 1 {
		t.Fatalf("plan after drift: %v %+v", err, ops)
	}
	for _, w := range []string{"create br8 and activate it", "update br9", "reactivate br9"} {
		if !strings.Contains(ops[0].Description, w) {
			t.Errorf("plan %q lacks %q", ops[0].Description, w)
		}
	}
	mustApply(t, e, want)

	waitAddrs(t, nm, "br9", "10.99.0.1/24")
	waitAddrs(t, nm, "br8", "10.98.0.1/24", "10.98.1.1/24", "fd00:98::1/64")
	if got := nmcliField(t, nm, "bridge.stp", "br9"); got != "no" {
		t.Errorf("bridge.stp = %q after restore", got)
	}
	if got := nmcliField(t, nm, "ipv4.dns", "br9"); got != "10.99.0.53" {
		t.Errorf("ipv4.dns = %q after restore", got)
	}
	if got := nmcliConns(t, nm)["br8"]; got[0] != uuid8 || got[2] != "br8" {
		t.Errorf("br8 after restore = %v, want UUID %s active on br8", got, uuid8)
	}
	if got := nmcliField(t, nm, "ipv4.gateway", "br8"); got != "10.98.0.254" {
		t.Errorf("br8 ipv4.gateway = %q", got)
	}
	if got := nmcliField(t, nm, "connection.autoconnect", "br8"); got != "no" {
		t.Errorf("br8 autoconnect = %q", got)
	}
	zeroOps(t, p, want)
}

// state: absent deletes the named profile and nothing else; profiles the
// document does not name are untouched.
func TestTestbedAbsentDeletesOnlyNamed(t *testing.T) {
	nm, p, e := bed(t)
	ctx := tctx(t)
	for _, n := range []string{"br7", "br8"} {
		if out, err := nm.Nmcli(ctx, "connection", "add", "type", "bridge", "con-name", n, "ifname", n,
			"ipv4.method", "manual", "ipv4.addresses", "10.97."+n[2:]+".1/24", "ipv6.method", "disabled"); err != nil {
			t.Fatalf("nmcli add %s: %v\n%s", n, err, out)
		}
	}
	before := nmcliConns(t, nm)
	mustApply(t, e, decode(t, p, `{"connections": {"br7": {"state": "absent"}, "nosuch": {"state": "absent"}}}`))
	after := nmcliConns(t, nm)
	if _, ok := after["br7"]; ok {
		t.Errorf("br7 still there: %v", after)
	}
	if after["br8"][0] != before["br8"][0] || len(after) != len(before)-1 {
		t.Errorf("profiles before %v, after %v: only br7 should be gone", before, after)
	}
	zeroOps(t, p, decode(t, p, `{"connections": {"br7": {"state": "absent"}}}`))
}

// A step that fails inside the checkpoint (a profile for a device that
// cannot exist) rolls everything back: the update of an active profile,
// the deletion of an inactive one and the profile just added; nmcli and
// ip show the state from before, no checkpoint is left, and the engine
// finds nothing more to undo.
func TestTestbedFailingStepRollsBackCheckpoint(t *testing.T) {
	nm, p, e := bed(t)
	ctx := tctx(t)
	for _, args := range [][]string{
		{"connection", "add", "type", "bridge", "con-name", "br9", "ifname", "br9", "bridge.stp", "no",
			"ipv4.method", "manual", "ipv4.addresses", "10.99.0.1/24", "ipv6.method", "disabled"},
		{"connection", "add", "type", "bridge", "con-name", "idle", "ifname", "bridle", "connection.autoconnect", "no",
			"ipv4.method", "manual", "ipv4.addresses", "10.96.0.1/24", "ipv4.dns", "10.96.0.53"},
	} {
		if out, err := nm.Nmcli(ctx, args...); err != nil {
			t.Fatalf("nmcli %v: %v\n%s", args, err, out)
		}
	}
	waitAddrs(t, nm, "br9", "10.99.0.1/24")
	waitActivated(t, nm, "br9")
	before := nmcliConns(t, nm)
	idleFile := nmcliField(t, nm, "ipv4.dns", "idle")

	res := apply(t, e, decode(t, p, `{"connections": {
		"br9": {"ipv4": {"addresses": ["10.99.1.1/24"]}},
		"idle": {"state": "absent"},
		"ghost": {"type": "ethernet", "interface_name": "ghost0", "active": true}}}`))
	if res.Success || res.Err == nil {
		t.Fatal("apply with an impossible activation succeeded")
	}
	msg := res.Err.Error()
	t.Logf("error: %s", msg)
	for _, w := range []string{`activate connection "ghost"`, "ghost0", "rolled back"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q: %s", w, msg)
		}
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK || len(res.Rollback.Outcomes) != 0 {
		b, _ := json.MarshalIndent(res.Rollback, "", "  ")
		t.Errorf("engine rollback should find nothing left to undo: %s", b)
	}

	after := nmcliConns(t, nm)
	if _, ok := after["ghost"]; ok {
		t.Errorf("ghost profile left behind: %v", after)
	}
	if after["idle"][0] != before["idle"][0] {
		t.Errorf("idle profile not restored with its UUID: before %v after %v", before["idle"], after["idle"])
	}
	if got := nmcliField(t, nm, "ipv4.dns", "idle"); got != idleFile {
		t.Errorf("idle ipv4.dns = %q, want %q", got, idleFile)
	}
	if after["br9"][2] != "br9" {
		t.Errorf("br9 not active after rollback: %v", after["br9"])
	}
	if got := nmcliField(t, nm, "ipv4.addresses", "br9"); got != "10.99.0.1/24" {
		t.Errorf("br9 ipv4.addresses = %q after rollback", got)
	}
	waitAddrs(t, nm, "br9", "10.99.0.1/24")
	if out, err := nm.Exec(ctx, "busctl", "--system", "get-property", busName, string(nmPath), nmIfc, "Checkpoints"); err != nil || strings.TrimSpace(out) != "ao 0" {
		t.Errorf("checkpoints left: %q %v", out, err)
	}
}

// NetworkManager rejecting a setting fails the transaction before
// anything is left changed; the error carries NetworkManager's reason.
func TestTestbedRejectedSettingRollsBack(t *testing.T) {
	nm, p, e := bed(t)
	mustApply(t, e, decode(t, p, br9Doc))
	// A gateway outside any address with method manual is accepted, but a
	// veth without a peer is refused by NetworkManager itself.
	res := apply(t, e, decode(t, p, `{"connections": {
		"br9": {"ipv4": {"addresses": ["10.99.2.1/24"]}},
		"v0": {"type": "veth", "interface_name": "v0"}}}`))
	if res.Success {
		t.Fatal("apply of a veth without peer succeeded")
	}
	if !strings.Contains(res.Err.Error(), `add connection "v0"`) || !strings.Contains(res.Err.Error(), "veth") {
		t.Errorf("error: %v", res.Err)
	}
	waitAddrs(t, nm, "br9", "10.99.0.1/24")
	zeroOps(t, p, decode(t, p, br9Doc))
}

// The engine's rollback after a verification failure applies Subset of
// the pre-apply state: a profile the transaction created is deleted, a
// profile it changed gets its fields back.
func TestTestbedSubsetRestoreDeletesCreated(t *testing.T) {
	nm, p, e := bed(t)
	mustApply(t, e, decode(t, p, br9Doc))
	pre := query(t, p)
	desired := decode(t, p, `{"connections": {
		"br9": {"ipv4": {"addresses": ["10.99.3.1/24"]}, "bridge": {"stp": true}},
		"br6": {"type": "bridge", "interface_name": "br6", "active": true, "ipv4": {"method": "manual", "addresses": ["10.96.6.1/24"]}}}}`)
	ops, err := p.Plan(pre, desired)
	if err != nil || len(ops) != 1 {
		t.Fatalf("plan: %v %v", err, ops)
	}
	if err := p.Apply(tctx(t), ops[0]); err != nil {
		t.Fatal(err)
	}
	waitAddrs(t, nm, "br6", "10.96.6.1/24")
	waitAddrs(t, nm, "br9", "10.99.3.1/24")
	rb := e.Restore(tctx(t), map[string]any{"networkmanager": p.Subset(pre, []string{ops[0].Item})})
	if !rb.Verify.OK {
		b, _ := json.MarshalIndent(rb, "", "  ")
		t.Fatalf("restore: %s", b)
	}
	conns := nmcliConns(t, nm)
	if _, ok := conns["br6"]; ok {
		t.Errorf("created profile br6 survived the rollback: %v", conns)
	}
	waitAddrs(t, nm, "br9", "10.99.0.1/24")
	if got := nmcliField(t, nm, "bridge.stp", "br9"); got != "no" {
		t.Errorf("br9 bridge.stp = %q after restore", got)
	}
	zeroOps(t, p, pre)
}

// A veth NetworkManager creates itself, as a port of a bridge: the port
// is activated after its controller and observed with its master.
func TestTestbedBridgePort(t *testing.T) {
	nm, p, e := bed(t)
	mustApply(t, e, decode(t, p, `{"connections": {
		"br9": {"type": "bridge", "interface_name": "br9", "active": true, "bridge": {"stp": false},
			"ipv4": {"method": "manual", "addresses": ["10.99.0.1/24"]}, "ipv6": {"method": "disabled"}},
		"vp0": {"type": "veth", "interface_name": "vp0", "veth": {"peer": "vp1"}, "controller": "br9", "port_type": "bridge", "active": true}}}`))
	out, err := nm.Exec(tctx(t), "ip", "-j", "link", "show", "dev", "vp0")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Master string `json:"master"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].Master != "br9" {
		t.Fatalf("ip -j link show vp0: %s (%v)", out, err)
	}
	q := query(t, p)
	if c := q.Connections["vp0"]; c == nil || *c.Controller != "br9" || *c.PortType != "bridge" || !*c.Active {
		b, _ := json.Marshal(c)
		t.Errorf("query vp0 = %s", b)
	}
	zeroOps(t, p, q)
	obs, err := p.Observe(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Interface == "vp0" && (!o.KnownMaster || o.Master != "br9" || !o.Exists) {
			t.Errorf("observation of vp0: %+v", o)
		}
	}
}
