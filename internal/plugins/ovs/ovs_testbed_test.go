package ovs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

func bedPlugin(t *testing.T, opts ...testbed.OVSOption) (*testbed.OVS, *Plugin) {
	t.Helper()
	o := testbed.NewOVS(t, opts...)
	p := New(plugin.Options{OVSDB: o.DBAddress})
	t.Cleanup(func() { p.Close() })
	return o, p
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func vsctl(t *testing.T, o *testbed.OVS, args ...string) string {
	t.Helper()
	out, err := o.Vsctl(tctx(t), args...)
	if err != nil {
		t.Fatalf("ovs-vsctl %v: %v\n%s", args, err, o.Log("ovs-vswitchd"))
	}
	return strings.TrimSpace(out)
}

// decode reads an ovs state document the way op-dbus does (strict
// decoding, then Validate).
func decode(t *testing.T, p *Plugin, ovs string) *state.Document {
	t.Helper()
	e := engine.New([]plugin.Plugin{p})
	doc, err := state.Decode([]byte(`{"version": 1, "plugins": {"ovs": `+ovs+`}}`), state.FormatJSON, e.Types(), e.Validate)
	if err != nil {
		t.Fatalf("decode %s: %v", ovs, err)
	}
	return doc
}

// apply plans and applies a document through the engine, as op-dbus
// apply does, and returns the plan and the result.
func apply(t *testing.T, p *Plugin, ovs string) (*engine.Plan, *engine.Result) {
	t.Helper()
	e := engine.New([]plugin.Plugin{p})
	doc := decode(t, p, ovs)
	plan, err := e.Plan(tctx(t), doc)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return plan, e.Apply(tctx(t), doc, plan)
}

func mustApply(t *testing.T, p *Plugin, ovs string) *engine.Plan {
	t.Helper()
	plan, res := apply(t, p, ovs)
	if !res.Success {
		b, _ := json.MarshalIndent(res, "", "  ")
		t.Fatalf("apply failed: %v\n%s", res.Err, b)
	}
	return plan
}

func planOf(t *testing.T, p *Plugin, ovs string) []plugin.Op {
	t.Helper()
	e := engine.New([]plugin.Plugin{p})
	plan, err := e.Plan(tctx(t), decode(t, p, ovs))
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return plan.Ops
}

func query(t *testing.T, p *Plugin) *State {
	t.Helper()
	st, err := p.Query(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.(*State)
}

// vsList is `ovs-vsctl --format=json list TABLE` as name → column → value.
func vsList(t *testing.T, o *testbed.OVS, table string) map[string]map[string]any {
	t.Helper()
	out := vsctl(t, o, "--format=json", "list", table)
	var raw struct {
		Headings []string `json:"headings"`
		Data     [][]any  `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("ovs-vsctl list %s: %v\n%s", table, err, out)
	}
	rows := map[string]map[string]any{}
	for _, d := range raw.Data {
		row := map[string]any{}
		for i, h := range raw.Headings {
			row[h] = d[i]
		}
		name, _ := row["name"].(string)
		rows[name] = row
	}
	return rows
}

// ovsJSON renders an ovs-vsctl JSON value compactly for comparisons:
// ["set",[]] → [], 10 → 10, ["map",[["a","b"]]] → {a:b}.
func ovsJSON(v any) string {
	a, ok := v.([]any)
	if ok && len(a) == 2 {
		switch a[0] {
		case "set":
			var parts []string
			for _, x := range a[1].([]any) {
				parts = append(parts, ovsJSON(x))
			}
			sort.Strings(parts)
			return "[" + strings.Join(parts, ",") + "]"
		case "map":
			var parts []string
			for _, kv := range a[1].([]any) {
				p := kv.([]any)
				parts = append(parts, fmt.Sprint(p[0])+"="+fmt.Sprint(p[1]))
			}
			sort.Strings(parts)
			return "{" + strings.Join(parts, ",") + "}"
		case "uuid":
			return "uuid"
		}
	}
	return fmt.Sprint(v)
}

// ipLinks is `ip -j link` inside the bed: name → (mtu, flags).
func ipLinks(t *testing.T, o *testbed.OVS) map[string]struct {
	MTU   int
	Flags []string
} {
	t.Helper()
	out, err := o.NetNS.Exec(tctx(t), "ip", "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name  string   `json:"ifname"`
		MTU   int      `json:"mtu"`
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j link: %v\n%s", err, out)
	}
	m := map[string]struct {
		MTU   int
		Flags []string
	}{}
	for _, l := range links {
		m[l.Name] = struct {
			MTU   int
			Flags []string
		}{l.MTU, l.Flags}
	}
	return m
}

const fullDoc = `{"bridges": {
  "br0": {"datapath_type": "netdev", "fail_mode": "secure", "external_ids": {"owner": "op-dbus"},
    "ports": {
      "p1": {"tag": 10, "interfaces": {"p1": {"type": "internal"}}},
      "p2": {"trunks": [30, 20], "interfaces": {"p2": {"type": "internal", "mtu_request": 1400}}},
      "patch-a": {"interfaces": {"patch-a": {"type": "patch", "options": {"peer": "patch-b"}}}}
    }},
  "br1": {"datapath_type": "netdev",
    "ports": {"patch-b": {"interfaces": {"patch-b": {"type": "patch", "options": {"peer": "patch-a"}}}}}}
}}`

// Apply bridges, ports, tags, trunks, external_ids and a patch pair with
// ovs-vswitchd running: ovs-vsctl and ip -j link (internal ports are
// devices) agree, and planning again is empty.
func TestTestbedApplyBridgesPortsPatch(t *testing.T) {
	o, p := bedPlugin(t)
	plan := mustApply(t, p, fullDoc)
	if len(plan.Ops) != 1 || plan.Ops[0].ID != OpID {
		t.Fatalf("plan ops = %+v, want the one %s", plan.Ops, OpID)
	}
	items := strings.Fields(plan.Ops[0].Item)
	if !slices.Equal(items, []string{"bridges/br0", "bridges/br1"}) {
		t.Errorf("op item = %q", plan.Ops[0].Item)
	}
	if got := vsctl(t, o, "list-br"); got != "br0\nbr1" {
		t.Fatalf("list-br = %q", got)
	}
	if got := vsctl(t, o, "list-ports", "br0"); got != "p1\np2\npatch-a" {
		t.Errorf("list-ports br0 = %q", got)
	}
	ports := vsList(t, o, "Port")
	if _, ok := ports["br0"]; !ok {
		t.Error("no port br0: a new bridge gets its internal port, as add-br does")
	}
	if g := ovsJSON(ports["p1"]["tag"]); g != "10" {
		t.Errorf("p1 tag = %s", g)
	}
	if g := ovsJSON(ports["p2"]["trunks"]); g != "[20,30]" {
		t.Errorf("p2 trunks = %s", g)
	}
	if g := ovsJSON(ports["p2"]["tag"]); g != "[]" {
		t.Errorf("p2 tag = %s, want none", g)
	}
	brs := vsList(t, o, "Bridge")
	if g := ovsJSON(brs["br0"]["fail_mode"]); g != "secure" {
		t.Errorf("br0 fail_mode = %s", g)
	}
	if g := ovsJSON(brs["br0"]["external_ids"]); g != "{owner=op-dbus}" {
		t.Errorf("br0 external_ids = %s", g)
	}
	if g := ovsJSON(brs["br1"]["datapath_type"]); g != "netdev" {
		t.Errorf("br1 datapath_type = %s", g)
	}
	ifs := vsList(t, o, "Interface")
	if g := ovsJSON(ifs["patch-a"]["options"]); g != "{peer=patch-b}" {
		t.Errorf("patch-a options = %s", g)
	}
	if g := ovsJSON(ifs["br0"]["type"]); g != "internal" {
		t.Errorf("br0 interface type = %s", g)
	}
	for _, n := range []string{"p1", "p2", "patch-a", "patch-b", "br0", "br1"} {
		if e := ovsJSON(ifs[n]["error"]); e != "[]" {
			t.Errorf("interface %s error = %s", n, e)
		}
	}
	links := ipLinks(t, o)
	for _, n := range []string{"br0", "br1", "p1", "p2"} {
		if _, ok := links[n]; !ok {
			t.Errorf("internal port %s is not a device in the bed (ip -j link: %v)", n, links)
		}
	}
	if _, ok := links["patch-a"]; ok {
		t.Error("a patch port became a kernel device")
	}
	if links["p2"].MTU != 1400 {
		t.Errorf("p2 mtu = %d, want 1400 (mtu_request)", links["p2"].MTU)
	}
	if ops := planOf(t, p, fullDoc); len(ops) != 0 {
		t.Fatalf("plan after apply = %+v", ops)
	}
}

// Query of what ovs-vsctl built plans zero ops against itself, also after
// going through JSON and the strict decoder, and matches ovs-vsctl.
func TestTestbedQueryRoundTrip(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev", "external_ids:a=b",
		"--", "add-port", "br0", "p1", "tag=10", "--", "set", "Interface", "p1", "type=internal", "mtu_request=1450",
		"--", "add-port", "br0", "p2", "trunks=5,6",
		"--", "add-br", "br1", "--", "set", "Bridge", "br1", "fail_mode=secure",
		"--", "add-port", "br0", "pa", "--", "set", "Interface", "pa", "type=patch", "options:peer=pb",
		"--", "add-port", "br1", "pb", "--", "set", "Interface", "pb", "type=patch", "options:peer=pa")
	st := query(t, p)
	if ops, err := p.Plan(st, st); err != nil || len(ops) != 0 {
		t.Fatalf("Plan(query, query) = %+v, %v", ops, err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	doc := decode(t, p, string(b))
	if ops, err := p.Plan(st, doc.Plugins["ovs"]); err != nil || len(ops) != 0 {
		t.Fatalf("Plan(query, decoded JSON of query) = %+v, %v\n%s", ops, err, b)
	}
	// Against the oracle.
	br0 := st.Bridges["br0"]
	if br0 == nil || st.Bridges["br1"] == nil || len(st.Bridges) != 2 {
		t.Fatalf("bridges = %s", b)
	}
	if br0.DatapathType != "netdev" || br0.FailMode != "standalone" || br0.ExternalIDs["a"] != "b" {
		t.Errorf("br0 = %+v", br0)
	}
	if st.Bridges["br1"].FailMode != "secure" || st.Bridges["br1"].DatapathType != "system" {
		t.Errorf("br1 = %+v", st.Bridges["br1"])
	}
	ports := vsList(t, o, "Port")
	for _, pn := range []string{"br0", "p1", "p2", "pa"} {
		port := br0.Ports[pn]
		if port == nil {
			t.Fatalf("port %s missing from query: %s", pn, b)
		}
		tag := string(port.Tag)
		if tag == "null" {
			tag = "[]"
		}
		if want := ovsJSON(ports[pn]["tag"]); tag != want {
			t.Errorf("port %s tag: query %s, ovs-vsctl %s", pn, tag, want)
		}
		tr, _ := json.Marshal(port.Trunks)
		if want := ovsJSON(ports[pn]["trunks"]); string(tr) != want {
			t.Errorf("port %s trunks: query %s, ovs-vsctl %s", pn, tr, want)
		}
	}
	ifs := vsList(t, o, "Interface")
	for pn, port := range br0.Ports {
		for in, iface := range port.Interfaces {
			want := ovsJSON(ifs[in]["type"])
			if want == "" {
				want = "system"
			}
			if iface.Type != want {
				t.Errorf("%s/%s type: query %q, ovs-vsctl %q", pn, in, iface.Type, want)
			}
		}
	}
	if got := string(br0.Ports["p1"].Interfaces["p1"].MTURequest); got != "1450" {
		t.Errorf("p1 mtu_request = %s", got)
	}
	if got := br0.Ports["pa"].Interfaces["pa"].Options["peer"]; got != "pb" {
		t.Errorf("pa peer = %q", got)
	}
}

// An out-of-band change (ovs-vsctl) to what the document names shows in
// the plan field by field and is restored by apply.
func TestTestbedOutOfBandChangeRestored(t *testing.T) {
	o, p := bedPlugin(t)
	mustApply(t, p, fullDoc)
	vsctl(t, o, "set", "Port", "p1", "tag=99", "--", "del-port", "br0", "p2",
		"--", "set", "Bridge", "br0", "fail_mode=standalone", "external_ids:intruder=yes",
		"--", "set", "Interface", "patch-a", "options:peer=nowhere")
	ops := planOf(t, p, fullDoc)
	if len(ops) != 1 {
		t.Fatalf("plan after drift = %+v", ops)
	}
	var paths []string
	for _, c := range ops[0].Changes {
		paths = append(paths, c.Path)
	}
	for _, want := range []string{`bridges["br0"].fail_mode`, `bridges["br0"].external_ids`, `bridges["br0"].ports["p1"].tag`,
		`bridges["br0"].ports["p2"].state`, `bridges["br0"].ports["patch-a"].interfaces["patch-a"].options`} {
		if !slices.Contains(paths, want) {
			t.Errorf("plan changes %v lack %s", paths, want)
		}
	}
	mustApply(t, p, fullDoc)
	ports := vsList(t, o, "Port")
	if g := ovsJSON(ports["p1"]["tag"]); g != "10" {
		t.Errorf("p1 tag = %s after restore", g)
	}
	if g := ovsJSON(ports["p2"]["trunks"]); g != "[20,30]" {
		t.Errorf("p2 trunks = %s after restore", g)
	}
	brs := vsList(t, o, "Bridge")
	if g := ovsJSON(brs["br0"]["external_ids"]); g != "{owner=op-dbus}" {
		t.Errorf("br0 external_ids = %s after restore", g)
	}
	if g := ovsJSON(brs["br0"]["fail_mode"]); g != "secure" {
		t.Errorf("br0 fail_mode = %s after restore", g)
	}
	if _, ok := ipLinks(t, o)["p2"]; !ok {
		t.Error("p2 device not back")
	}
}

// The captured query, applied after out-of-band changes, restores exactly
// what it captured, nullable and map columns included.
func TestTestbedQueryRestoresCapture(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0", "--", "add-port", "br0", "p1", "--", "add-port", "br0", "p2", "tag=7")
	captured, err := json.Marshal(query(t, p))
	if err != nil {
		t.Fatal(err)
	}
	before := vsctl(t, o, "--format=json", "--columns=name,tag,trunks,external_ids", "list", "Port")
	vsctl(t, o, "set", "Port", "p1", "tag=5", "trunks=1,2", "external_ids:x=y", "--", "clear", "Port", "p2", "tag",
		"--", "set", "Interface", "p1", "mtu_request=1300", "type=internal", "--", "add-port", "br0", "p3")
	mustApply(t, p, string(captured))
	after := vsctl(t, o, "--format=json", "--columns=name,tag,trunks,external_ids", "list", "Port")
	// p3 is not in the capture and stays (only what the document names is
	// managed); the rest is as before.
	if !strings.Contains(after, `"p3"`) {
		t.Errorf("p3, not named by the capture, was removed: %s", after)
	}
	var b, a struct{ Data [][]any }
	json.Unmarshal([]byte(before), &b)
	json.Unmarshal([]byte(after), &a)
	rows := func(d [][]any) map[string]string {
		m := map[string]string{}
		for _, r := range d {
			m[fmt.Sprint(r[0])] = ovsJSON(r[1]) + " " + ovsJSON(r[2]) + " " + ovsJSON(r[3])
		}
		return m
	}
	rb, ra := rows(b.Data), rows(a.Data)
	for n, v := range rb {
		if ra[n] != v {
			t.Errorf("port %s: before %s, after restore %s", n, v, ra[n])
		}
	}
	ifs := vsList(t, o, "Interface")
	if g := ovsJSON(ifs["p1"]["mtu_request"]); g != "[]" {
		t.Errorf("p1 mtu_request = %s, want unset again", g)
	}
	if g := ovsJSON(ifs["p1"]["type"]); g != "" {
		t.Errorf("p1 type = %q, want the empty (system) type again", g)
	}
}

// state: absent deletes exactly what it names: one port, then one bridge;
// ports and bridges the document does not name are left alone.
func TestTestbedAbsentDeletesOnlyNamed(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0", "--", "add-port", "br0", "p1", "--", "add-port", "br0", "p2", "--", "add-port", "br0", "p3",
		"--", "add-br", "br1", "--", "add-port", "br1", "q1", "--", "add-br", "keep")
	mustApply(t, p, `{"bridges": {"br0": {"ports": {"p2": {"state": "absent"}, "nope": {"state": "absent"}}}, "never": {"state": "absent"}}}`)
	if got := vsctl(t, o, "list-ports", "br0"); got != "p1\np3" {
		t.Errorf("list-ports br0 = %q, want p1 p3", got)
	}
	mustApply(t, p, `{"bridges": {"br1": {"state": "absent"}}}`)
	if got := vsctl(t, o, "list-br"); got != "br0\nkeep" {
		t.Errorf("list-br = %q", got)
	}
	// The deleted bridge's port and interface rows went with it.
	if _, ok := vsList(t, o, "Port")["q1"]; ok {
		t.Error("port q1 of the deleted bridge is still in the Port table")
	}
	if _, ok := vsList(t, o, "Interface")["q1"]; ok {
		t.Error("interface q1 of the deleted bridge is still in the Interface table")
	}
	if ops := planOf(t, p, `{"bridges": {"br1": {"state": "absent"}, "br0": {"ports": {"p2": {"state": "absent"}}}}}`); len(ops) != 0 {
		t.Errorf("absent again plans %+v", ops)
	}
}

// A port moves between bridges in one transaction when the document marks
// it absent on the old one; without that the plan refuses.
func TestTestbedMovePort(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0", "--", "add-br", "br1", "--", "add-port", "br0", "p1", "tag=3")
	e := engine.New([]plugin.Plugin{p})
	_, err := e.Plan(tctx(t), decode(t, p, `{"bridges": {"br1": {"ports": {"p1": {}}}}}`))
	if err == nil || !strings.Contains(err.Error(), `bridges["br1"].ports["p1"]: port p1 is on bridge br0`) {
		t.Fatalf("plan error = %v", err)
	}
	mustApply(t, p, `{"bridges": {"br0": {"ports": {"p1": {"state": "absent"}}}, "br1": {"ports": {"p1": {"tag": 4}}}}}`)
	if got := vsctl(t, o, "port-to-br", "p1"); got != "br1" {
		t.Errorf("port-to-br p1 = %q", got)
	}
	if got := vsctl(t, o, "get", "Port", "p1", "tag"); got != "4" {
		t.Errorf("p1 tag = %q", got)
	}
}

// A transaction that ovsdb-server rejects changes nothing: here a port the
// plan creates was created by someone else on another bridge between plan
// and apply (unique name index), and another change of the same plan (a
// tag) is not made either. The error names the operation and the path.
func TestTestbedFailedTransactionChangesNothing(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0", "--", "add-br", "br1", "--", "add-port", "br0", "p1", "tag=1")
	e := engine.New([]plugin.Plugin{p})
	doc := decode(t, p, `{"bridges": {"br0": {"ports": {"p1": {"tag": 2}, "p5": {}, "p6": {}}}}}`)
	plan, err := e.Plan(tctx(t), doc)
	if err != nil {
		t.Fatal(err)
	}
	vsctl(t, o, "add-port", "br1", "p6")
	before := vsctl(t, o, "show")
	err = p.Apply(tctx(t), plan.Ops[0])
	if err == nil {
		t.Fatal("apply succeeded despite the conflicting port")
	}
	for _, want := range []string{`bridges["br0"].ports["p6"]`, "nothing was changed", "constraint violation", "insert Port p6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if after := vsctl(t, o, "show"); after != before {
		t.Errorf("ovs-vsctl show changed by a failed transaction:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := vsctl(t, o, "get", "Port", "p1", "tag"); got != "1" {
		t.Errorf("p1 tag = %s; the failed transaction changed it", got)
	}
	// Through the engine: the op fails, rollback finds nothing to undo.
	res := e.Apply(tctx(t), doc, plan)
	if res.Success || res.Rollback == nil || !res.Rollback.Verify.OK {
		b, _ := json.MarshalIndent(res, "", " ")
		t.Fatalf("engine apply: %s", b)
	}
	if after := vsctl(t, o, "show"); after != before {
		t.Errorf("show changed after engine apply + rollback:\n%s", after)
	}
}

// An interface ovs-vswitchd cannot set up (an unknown type) fails the
// apply with its Interface.error; the engine's rollback (Subset marks the
// new port absent) removes it again, leaving the rest as it was.
func TestTestbedInterfaceErrorRollsBack(t *testing.T) {
	o, p := bedPlugin(t)
	vsctl(t, o, "add-br", "br0", "--", "set", "Bridge", "br0", "datapath_type=netdev")
	before := vsctl(t, o, "list-ports", "br0")
	plan, res := apply(t, p, `{"bridges": {"br0": {"ports": {"good": {"interfaces": {"good": {"type": "internal"}}}, "bad0": {"interfaces": {"bad0": {"type": "no-such-type"}}}}}}}`)
	if res.Success {
		t.Fatal("apply of an interface with an unknown type succeeded")
	}
	if !strings.Contains(res.Err.Error(), `bridges["br0"].ports["bad0"].interfaces["bad0"]: ovs-vswitchd:`) {
		t.Errorf("error = %v", res.Err)
	}
	if got := strings.Fields(plan.Ops[0].Item); !slices.Equal(got, []string{"bridges/br0/ports/bad0", "bridges/br0/ports/good"}) {
		t.Errorf("items = %v", got)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		b, _ := json.MarshalIndent(res.Rollback, "", " ")
		t.Fatalf("rollback: %s", b)
	}
	if got := vsctl(t, o, "list-ports", "br0"); got != before {
		t.Errorf("list-ports after rollback = %q, want %q", got, before)
	}
	if _, ok := ipLinks(t, o)["good"]; ok {
		t.Error("device good still exists after rollback")
	}
}

// Watch fires on a change made by someone else, and not while nothing
// changes.
func TestTestbedWatch(t *testing.T) {
	o, p := bedPlugin(t, testbed.OVSDBOnly())
	vsctl(t, o, "add-br", "br0")
	ctx, cancel := context.WithCancel(tctx(t))
	var n atomic.Int64
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, func() { n.Add(1) }) }()
	// Let the initial rows pass, then expect quiet.
	time.Sleep(500 * time.Millisecond)
	start := n.Load()
	time.Sleep(300 * time.Millisecond)
	if n.Load() != start {
		t.Fatalf("Watch fired %d times while nothing changed", n.Load()-start)
	}
	vsctl(t, o, "set", "Bridge", "br0", "external_ids:k=v")
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() == start && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n.Load() == start {
		t.Fatal("Watch did not fire after ovs-vsctl changed br0")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// Observe agrees with ip -j link in the bed: one observation per kernel
// interface, MTU and admin state from ovs-vswitchd, master the bridge.
func TestTestbedObserve(t *testing.T) {
	o, p := bedPlugin(t)
	mustApply(t, p, fullDoc)
	obs, err := p.Observe(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	links := ipLinks(t, o)
	got := map[string]bool{}
	for _, ob := range obs {
		got[ob.Interface] = true
		if ob.Source != "ovsdb" || !ob.Exists || !ob.KnownMaster || ob.KnownAddresses {
			t.Errorf("%+v", ob)
		}
		l, ok := links[ob.Interface]
		if !ok {
			t.Errorf("observed %s is not a device in the bed", ob.Interface)
			continue
		}
		if ob.MTU != l.MTU {
			t.Errorf("%s: ovsdb mtu %d, ip link %d", ob.Interface, ob.MTU, l.MTU)
		}
		up := slices.Contains(l.Flags, "UP")
		if (ob.State == "up") != up {
			t.Errorf("%s: ovsdb admin_state %q, ip link flags %v", ob.Interface, ob.State, l.Flags)
		}
	}
	want := map[string]string{"br0": "", "br1": "", "p1": "br0", "p2": "br0"}
	for n, m := range want {
		if !got[n] {
			t.Errorf("no observation of %s (got %v)", n, got)
		}
		for _, ob := range obs {
			if ob.Interface == n && ob.Master != m {
				t.Errorf("%s master = %q, want %q", n, ob.Master, m)
			}
		}
	}
	if got["patch-a"] || got["patch-b"] {
		t.Error("patch ports (not kernel devices) were observed")
	}
}
