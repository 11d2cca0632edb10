package ovs

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

func decodeState(t *testing.T, ovs string) (*State, error) {
	t.Helper()
	p := New(plugin.Options{})
	doc, err := state.Decode([]byte(`{"version": 1, "plugins": {"ovs": `+ovs+`}}`), state.FormatJSON,
		state.Types{"ovs": p.NewState}, func(_ string, st any) state.Problems { return p.Validate(st) })
	if err != nil {
		return nil, err
	}
	return doc.Plugins["ovs"].(*State), nil
}

func TestValidateRejects(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`{"bridges": {"a-very-long-bridge0": {}}}`, `plugins.ovs.bridges["a-very-long-bridge0"]: name "a-very-long-bridge0" is 19 bytes; Linux interface names are at most 15`},
		{`{"bridges": {"br0": {"ports": {"a/b": {}}}}}`, `bridges["br0"].ports["a/b"]: name "a/b" contains '/'`},
		{`{"bridges": {"br0": {"ports": {"p1": {}}}, "br1": {"ports": {"p1": {}}}}}`, `bridges["br1"].ports["p1"]: port p1 is also on bridge br0`},
		{`{"bridges": {"br0": {"ports": {"br1": {}}}, "br1": {}}}`, `bridges["br0"].ports["br1"]: br1 is a bridge; a bridge cannot be a port of another bridge`},
		{`{"bridges": {"br0": {"ports": {"br0": {"interfaces": {"br0": {"type": "system"}}}}}}}`, `bridges["br0"].ports["br0"].interfaces["br0"].type: interface br0 is named like its bridge`},
		{`{"bridges": {"br0": {"ports": {"pa": {"interfaces": {"pa": {"type": "patch", "options": {"peer": "pb"}}}}, "pb": {"interfaces": {"pb": {"type": "patch", "options": {"peer": "pa"}}}}}}}}`, `patch peer pb is on the same bridge br0`},
		{`{"bridges": {"br0": {"ports": {"p1": {"tag": 4096}}}}}`, `bridges["br0"].ports["p1"].tag: VLAN tag 4096 is outside 0..4095`},
		{`{"bridges": {"br0": {"ports": {"p1": {"tag": -1}}}}}`, `VLAN tag -1 is outside 0..4095`},
		{`{"bridges": {"br0": {"ports": {"p1": {"tag": "ten"}}}}}`, `tag: expected an integer or null, got "ten"`},
		{`{"bridges": {"br0": {"ports": {"p1": {"trunks": [1, 5000]}}}}}`, `trunks[1]: VLAN 5000 is outside 0..4095`},
		{`{"bridges": {"br0": {"fail_mode": "open"}}}`, `bridges["br0"].fail_mode: must be "standalone" or "secure", got "open"`},
		{`{"bridges": {"br0": {"state": "gone"}}}`, `bridges["br0"].state: must be "present" or "absent"`},
		{`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"p1": {"mtu_request": 0}}}}}}}`, `mtu_request: MTU 0 is outside 68..65535`},
		{`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"p1": {"mtu_request": 100000}}}}}}}`, `MTU 100000 is outside 68..65535`},
		{`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"x": {"type": "patch"}}}}}}}`, `a patch interface needs options.peer`},
		{`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"i": {}}}, "p2": {"interfaces": {"i": {}}}}}}}`, `interface i is also in bridges["br0"].ports["p1"]`},
		{`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"i": {"state": "absent"}}}}}}}`, `every interface is absent`},
		{`{"bridges": {"br0": {"datapath": "netdev"}}}`, `bridges["br0"].datapath: unknown field`},
	}
	for _, c := range cases {
		_, err := decodeState(t, c.doc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n  error %v\n  want  %s", c.doc, err, c.want)
		}
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, doc := range []string{
		`{"bridges": {"br0": {"datapath_type": "netdev", "fail_mode": "secure", "ports": {"br0": {}, "p1": {"tag": 0}, "p2": {"tag": null, "trunks": []}}}}}`,
		`{"bridges": {"br0": {"ports": {"pa": {"interfaces": {"pa": {"type": "patch", "options": {"peer": "pb"}}}}}}, "br1": {"ports": {"pb": {"interfaces": {"pb": {"type": "patch", "options": {"peer": "pa"}}}}}}}}`,
		// A port absent on one bridge and present on another is a move.
		`{"bridges": {"br0": {"ports": {"p1": {"state": "absent"}}}, "br1": {"ports": {"p1": {}}}}}`,
		`{"bridges": {"br0": {"ports": {"br0": {"interfaces": {"br0": {"type": "internal", "mtu_request": 9000}}}}}}}`,
	} {
		if _, err := decodeState(t, doc); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
}

// null and a number survive decoding as distinct from "not given".
func TestNullableDecoding(t *testing.T) {
	st, err := decodeState(t, `{"bridges": {"br0": {"ports": {"a": {"tag": null}, "b": {"tag": 7}, "c": {}}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ports := st.Bridges["br0"].Ports
	for name, want := range map[string]string{"a": "null", "b": "7", "c": ""} {
		if got := string(ports[name].Tag); got != want {
			t.Errorf("%s tag = %q, want %q", name, got, want)
		}
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"a":{"tag":null}`) || !strings.Contains(string(b), `"c":{}`) {
		t.Errorf("marshal = %s", b)
	}
}

func actionsOf(t *testing.T, ops []plugin.Op) []action {
	t.Helper()
	if len(ops) != 1 {
		t.Fatalf("ops = %+v, want one", ops)
	}
	tx, err := decodeTx(ops[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return tx.Actions
}

// A new bridge gets its internal port; a new port without interfaces one
// interface of its name; everything goes into one op.
func TestPlanNewBridgeDefaults(t *testing.T) {
	p := New(plugin.Options{})
	des, err := decodeState(t, `{"bridges": {"br0": {"datapath_type": "netdev", "ports": {"p1": {"tag": 5}, "p2": {"interfaces": {"e1": {}, "e2": {"type": "internal"}}}}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := p.Plan(&State{}, des)
	if err != nil {
		t.Fatal(err)
	}
	as := actionsOf(t, ops)
	if len(as) != 1 || as[0].Kind != addBridge {
		t.Fatalf("actions = %+v", as)
	}
	spec := as[0].BridgeSet
	if got := slices.Sorted(maps.Keys(spec.Ports)); !slices.Equal(got, []string{"br0", "p1", "p2"}) {
		t.Fatalf("ports = %v", got)
	}
	if spec.Ports["br0"].Interfaces["br0"].Type != "internal" {
		t.Errorf("own port = %+v", spec.Ports["br0"].Interfaces["br0"])
	}
	if in := spec.Ports["p1"].Interfaces; len(in) != 1 || in["p1"] == nil || in["p1"].Type != "" {
		t.Errorf("p1 interfaces = %+v", in)
	}
	if got := slices.Sorted(maps.Keys(spec.Ports["p2"].Interfaces)); !slices.Equal(got, []string{"e1", "e2"}) {
		t.Errorf("p2 interfaces = %v", got)
	}
	if ops[0].Item != "bridges/br0" || !ops[0].Reversible || ops[0].ID != OpID {
		t.Errorf("op = %+v", ops[0])
	}
}

func queried() *State {
	return &State{Bridges: map[string]*Bridge{
		"br0": {DatapathType: "netdev", FailMode: "standalone", ExternalIDs: map[string]string{}, OtherConfig: map[string]string{},
			Ports: map[string]*Port{
				"br0": {Tag: rawInt(nil), Trunks: []int{}, ExternalIDs: map[string]string{}, Interfaces: map[string]*Interface{"br0": {Type: "internal", Options: map[string]string{}, MTURequest: rawInt(nil), ExternalIDs: map[string]string{}}}},
				"p1":  {Tag: rawInt(ptr(10)), Trunks: []int{}, ExternalIDs: map[string]string{}, Interfaces: map[string]*Interface{"p1": {Type: "system", Options: map[string]string{}, MTURequest: rawInt(nil), ExternalIDs: map[string]string{}}}},
			}},
	}}
}

func ptr(i int) *int { return &i }

func TestPlanSetsOnlyChangedFields(t *testing.T) {
	p := New(plugin.Options{})
	cur := queried()
	des, err := decodeState(t, `{"bridges": {"br0": {"datapath_type": "netdev", "fail_mode": "secure", "ports": {"p1": {"tag": null, "interfaces": {"p1": {"type": "system", "mtu_request": 1400}}}, "br0": {}}}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := p.Plan(cur, des)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, c := range ops[0].Changes {
		paths = append(paths, c.Path)
	}
	want := []string{`bridges["br0"].fail_mode`, `bridges["br0"].ports["p1"].tag`, `bridges["br0"].ports["p1"].interfaces["p1"].mtu_request`}
	if !slices.Equal(paths, want) {
		t.Errorf("changes = %v, want %v", paths, want)
	}
	if got := strings.Fields(ops[0].Item); !slices.Equal(got, []string{"bridges/br0", "bridges/br0/ports/p1"}) {
		t.Errorf("items = %v", got)
	}
	// Empty type and "system" are the same; so are unset and standalone.
	des2, _ := decodeState(t, `{"bridges": {"br0": {"datapath_type": "netdev", "fail_mode": "standalone", "ports": {"p1": {"tag": 10, "interfaces": {"p1": {"type": "system"}}}}}}}`)
	if ops, err := p.Plan(cur, des2); err != nil || len(ops) != 0 {
		t.Errorf("plan = %+v, %v", ops, err)
	}
}

func TestPlanRefusesPortOnOtherBridge(t *testing.T) {
	p := New(plugin.Options{})
	cur := queried()
	cur.Bridges["br1"] = &Bridge{Ports: map[string]*Port{}}
	des, _ := decodeState(t, `{"bridges": {"br1": {"ports": {"p1": {}}}}}`)
	if _, err := p.Plan(cur, des); err == nil || !strings.Contains(err.Error(), "port p1 is on bridge br0 now") {
		t.Fatalf("err = %v", err)
	}
	des, _ = decodeState(t, `{"bridges": {"br0": {"ports": {"p2": {"interfaces": {"p1": {}}}}}}}`)
	if _, err := p.Plan(cur, des); err == nil || !strings.Contains(err.Error(), "interface p1 is on port p1 of bridge br0 now") {
		t.Fatalf("err = %v", err)
	}
}

// Subset: touched items that existed come back whole, new ones absent.
func TestSubset(t *testing.T) {
	p := New(plugin.Options{})
	cur := queried()
	sub := p.Subset(cur, []string{"bridges/br0/ports/p1 bridges/br0/ports/new bridges/brnew bridges/brnew/ports/x"}).(*State)
	b, _ := json.Marshal(sub)
	if sub.Bridges["brnew"] == nil || sub.Bridges["brnew"].State != "absent" {
		t.Errorf("new bridge not absent: %s", b)
	}
	br0 := sub.Bridges["br0"]
	if br0 == nil || br0.FailMode != "" || br0.Ports["new"].State != "absent" || br0.Ports["br0"] != nil {
		t.Errorf("br0 = %s", b)
	}
	if string(br0.Ports["p1"].Tag) != "10" || br0.Ports["p1"].Interfaces["p1"].Type != "system" {
		t.Errorf("p1 = %s", b)
	}
	whole := p.Subset(cur, []string{"bridges/br0"}).(*State)
	if whole.Bridges["br0"].FailMode != "standalone" || len(whole.Bridges["br0"].Ports) != 2 {
		t.Errorf("whole bridge = %+v", whole.Bridges["br0"])
	}
	// Applying the subset to the state it came from plans nothing.
	if ops, err := p.Plan(cur, whole); err != nil || len(ops) != 0 {
		t.Errorf("plan(subset) = %+v, %v", ops, err)
	}
	// Names with odd characters survive the item encoding.
	odd := &State{Bridges: map[string]*Bridge{"a b/c": {Ports: map[string]*Port{}}}}
	sub = p.Subset(odd, []string{bridgeItem("a b/c")}).(*State)
	if _, ok := sub.Bridges["a b/c"]; !ok {
		t.Errorf("escaped item lost: %+v", sub.Bridges)
	}
}

func TestAvailableMissingSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.sock")
	p := New(plugin.Options{OVSDB: "unix:" + path})
	defer p.Close()
	err := p.Available(context.Background())
	if err == nil {
		t.Fatal("Available with no socket succeeded")
	}
	for _, want := range []string{"ovsdb-server not reachable at unix:" + path, "start openvswitch-switch or pass --ovsdb"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := p.Query(context.Background()); err == nil {
		t.Error("Query with no socket succeeded")
	}
}

func TestAvailableBadAddress(t *testing.T) {
	p := New(plugin.Options{OVSDB: "/var/run/openvswitch/db.sock"})
	err := p.Available(context.Background())
	if err == nil || !strings.Contains(err.Error(), `is not unix:PATH or tcp:HOST:PORT`) {
		t.Fatalf("err = %v", err)
	}
}

// A peer on the socket that answers garbage is reported as such, naming
// the address, quickly (not after a timeout).
func TestAvailableGarbagePeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.sock")
	l, err := net.Listen("unix", path)
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
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n<html>not ovsdb</html>\x00\xff{]"))
				time.Sleep(200 * time.Millisecond)
			}()
		}
	}()
	p := New(plugin.Options{OVSDB: "unix:" + path})
	defer p.Close()
	start := time.Now()
	err = p.Available(context.Background())
	if err == nil {
		t.Fatal("Available against a garbage peer succeeded")
	}
	if !strings.Contains(err.Error(), "unix:"+path) {
		t.Errorf("error %q does not name the address", err)
	}
	if d := time.Since(start); d > ConnectTimeout+time.Second {
		t.Errorf("took %s", d)
	}
	t.Logf("error: %v", err)
}
