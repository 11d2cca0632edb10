package network

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// decodeDoc decodes a network state the way the CLI does: strict
// document decoding, then the plugin's Validate.
func decodeDoc(t testing.TB, p *Plugin, network string) (*state.Document, error) {
	t.Helper()
	e := engine.New([]plugin.Plugin{p})
	return state.Decode([]byte(`{"version": 1, "plugins": {"network": `+network+`}}`), state.FormatJSON, e.Types(), e.Validate)
}

func TestValidateBadInput(t *testing.T) {
	p := New(Options{})
	cases := []struct {
		name, doc string
		want      []string // substrings of the single error
	}{
		{"bad ip", `{"interfaces":[{"name":"br0","type":"bridge","ipv4":{"address":[{"ip":"10.0.0.300","prefix_length":24}]}}]}`,
			[]string{"plugins.network.interfaces[0].ipv4.address[0].ip", "invalid IP address \"10.0.0.300\""}},
		{"cidr in ip", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.0.0.1/24","prefix_length":24}]}}]}`,
			[]string{"interfaces[0].ipv4.address[0].ip", "without /prefix"}},
		{"v6 in v4", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"2001:db8::1","prefix_length":64}]}}]}`,
			[]string{"interfaces[0].ipv4.address[0].ip", "not an IPv4 address"}},
		{"prefix", `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":33}]}}]}`,
			[]string{"interfaces[0].ipv4.address[0].prefix_length", "out of range 1..32"}},
		{"prefix v6", `{"interfaces":[{"name":"br0","ipv6":{"address":[{"ip":"2001:db8::1","prefix_length":129}]}}]}`,
			[]string{"interfaces[0].ipv6.address[0].prefix_length", "1..128"}},
		{"link-local", `{"interfaces":[{"name":"br0","ipv6":{"address":[{"ip":"fe80::1","prefix_length":64}]}}]}`,
			[]string{"interfaces[0].ipv6.address[0].ip", "link-local"}},
		{"mtu 0", `{"interfaces":[{"name":"br0","mtu":0}]}`, []string{"interfaces[0].mtu", "mtu 0 is out of range 68..65535"}},
		{"mtu 100000", `{"interfaces":[{"name":"br0","mtu":100000}]}`, []string{"interfaces[0].mtu", "mtu 100000 is out of range"}},
		{"long name", `{"interfaces":[{"name":"abcdefghijklmnop","type":"bridge"}]}`, []string{"interfaces[0].name", "16 bytes", "at most 15"}},
		{"slash", `{"interfaces":[{"name":"br/0","type":"bridge"}]}`, []string{"interfaces[0].name", "contains '/'"}},
		{"space", `{"interfaces":[{"name":"br 0","type":"bridge"}]}`, []string{"interfaces[0].name", "whitespace"}},
		{"own port", `{"interfaces":[{"name":"br0","type":"bridge","controller":"br0"}]}`, []string{"interfaces[0].controller", "cannot be a port of itself"}},
		{"own port list", `{"interfaces":[{"name":"br0","type":"bridge","bridge":{"port":[{"name":"br0"}]}}]}`, []string{"interfaces[0].bridge.port[0].name", "cannot be a port of itself"}},
		{"port on two bridges", `{"interfaces":[{"name":"br0","type":"bridge","bridge":{"port":[{"name":"eth1"}]}},{"name":"br1","type":"bridge","bridge":{"port":[{"name":"eth1"}]}}]}`,
			[]string{"interfaces[1].bridge.port[0].name", "already a port of bridge \"br0\""}},
		{"port controller conflict", `{"interfaces":[{"name":"br0","type":"bridge","bridge":{"port":[{"name":"eth1"}]}},{"name":"eth1","controller":"br1"}]}`,
			[]string{"interfaces[0].bridge.port[0].name", "its controller is \"br1\""}},
		{"dup name", `{"interfaces":[{"name":"eth1","controller":"br0"},{"name":"eth1","controller":"br1"}]}`,
			[]string{"interfaces[1].name", "listed twice"}},
		{"veth no peer", `{"interfaces":[{"name":"va","type":"veth"}]}`, []string{"interfaces[0].veth.peer", "needs veth.peer"}},
		{"veth own peer", `{"interfaces":[{"name":"va","type":"veth","veth":{"peer":"va"}}]}`, []string{"interfaces[0].veth.peer", "own peer"}},
		{"bad state", `{"interfaces":[{"name":"br0","state":"gone"}]}`, []string{"interfaces[0].state", "\"gone\""}},
		{"bad mac", `{"interfaces":[{"name":"br0","mac_address":"zz"}]}`, []string{"interfaces[0].mac_address", "invalid MAC"}},
		{"vxlan id", `{"interfaces":[{"name":"vx0","type":"vxlan","vxlan":{"id":16777216}}]}`, []string{"interfaces[0].vxlan.id", "out of range"}},
		{"vxlan on bridge", `{"interfaces":[{"name":"br0","type":"bridge","vxlan":{"id":1}}]}`, []string{"interfaces[0].vxlan", "need type \"vxlan\""}},
		{"route cidr", `{"routes":{"config":[{"destination":"10.0.0.0/33","next_hop_interface":"br0"}]}}`, []string{"routes.config[0].destination", "invalid CIDR"}},
		{"route host bits", `{"routes":{"config":[{"destination":"10.0.0.1/24","next_hop_interface":"br0"}]}}`, []string{"routes.config[0].destination", "did you mean 10.0.0.0/24"}},
		{"route gw family", `{"routes":{"config":[{"destination":"10.0.0.0/24","next_hop_address":"2001:db8::1"}]}}`, []string{"routes.config[0].next_hop_address", "family"}},
		{"route no hop", `{"routes":{"config":[{"destination":"10.0.0.0/24"}]}}`, []string{"routes.config[0]", "needs next_hop_address or next_hop_interface"}},
		{"route local table", `{"routes":{"config":[{"destination":"10.0.0.0/24","next_hop_interface":"br0","table_id":255}]}}`, []string{"routes.config[0].table_id", "local"}},
		{"route dup", `{"routes":{"config":[{"destination":"10.0.0.0/24","next_hop_interface":"br0"},{"destination":"10.0.0.0/24","next_hop_interface":"br1","metric":0}]}}`, []string{"routes.config[1]", "same route as routes.config[0]"}},
		{"probe ip", `{"probes":[{"ping":"10.99.0.x"}]}`, []string{"probes[0].ping", "invalid IP"}},
		{"probe timeout", `{"probes":[{"ping":"10.99.0.2","timeout":"2 seconds"}]}`, []string{"probes[0].timeout", "invalid duration"}},
		{"probe timeout range", `{"probes":[{"ping":"10.99.0.2","timeout":"5m"}]}`, []string{"probes[0].timeout", "out of range"}},
		{"delete lo", `{"interfaces":[{"name":"lo","state":"absent"}]}`, []string{"interfaces[0].state", "loopback"}},
		{"controller absent", `{"interfaces":[{"name":"br0","state":"absent"},{"name":"va","controller":"br0"}]}`, []string{"interfaces[1].controller", "removed by this document"}},
		{"unknown field", `{"interfaces":[{"name":"br0","mtuu":1500}]}`, []string{"interfaces[0].mtuu", "unknown field"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeDoc(t, p, c.doc)
			if err == nil {
				t.Fatalf("accepted %s", c.doc)
			}
			var ps state.Problems
			msg := err.Error()
			if pe, ok := err.(state.Problems); ok {
				ps = pe
				msg = ps[0].Error()
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	p := New(Options{})
	good := `{"interfaces":[
		{"name":"lo","type":"loopback","state":"up","mtu":65536,"controller":"","ipv4":{"address":[{"ip":"127.0.0.1","prefix_length":8}]}},
		{"name":"br0","type":"bridge","state":"up","mtu":1500,"mac_address":"02:00:00:00:00:01","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24}]},
		 "ipv6":{"address":[{"ip":"2001:db8::1","prefix_length":64}]},"bridge":{"port":[{"name":"va"}]}},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br0"},
		{"name":"vb","type":"veth","veth":{"peer":"va"}},
		{"name":"vx0","type":"vxlan","vxlan":{"id":42,"remote":"192.0.2.1","destination_port":4789,"base_iface":"br0"}},
		{"name":"old0","state":"absent"}],
		"routes":{"config":[{"destination":"0.0.0.0/0","next_hop_address":"10.0.0.254","metric":100},
			{"destination":"10.6.0.0/24","next_hop_interface":"br0","table_id":100},
			{"destination":"10.7.0.0/24","route_type":"blackhole"},
			{"destination":"10.8.0.0/24","state":"absent"}]},
		"probes":[{"ping":"10.0.0.2","timeout":"1s"},{"ping":"2001:db8::2"}]}`
	if _, err := decodeDoc(t, p, good); err != nil {
		t.Fatal(err)
	}
}

func ops(t *testing.T, cur, des *State) []plugin.Op {
	t.Helper()
	o, err := plan(cur, des)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func ids(o []plugin.Op) []string {
	var out []string
	for _, op := range o {
		out = append(out, op.ID)
	}
	return out
}

func mustState(t *testing.T, s string) *State {
	t.Helper()
	st := &State{}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		t.Fatal(err)
	}
	if ps := validate(st); len(ps) > 0 {
		t.Fatal(ps)
	}
	return st
}

// The order inside a plan: create before controller, controller before up,
// up before addresses, addresses before routes; creates after deletes.
func TestPlanDependencyOrder(t *testing.T) {
	cur := mustState(t, `{"interfaces":[{"name":"lo","type":"loopback","state":"up"},{"name":"old0","type":"bridge","state":"down"}]}`)
	des := mustState(t, `{"interfaces":[
		{"name":"old0","state":"absent"},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br0","mtu":1400},
		{"name":"br0","type":"bridge","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24}]}},
		{"name":"vb","type":"veth","veth":{"peer":"va"},"state":"down"}],
		"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.0.0.254","metric":100}]}}`)
	o := ops(t, cur, des)
	got := ids(o)
	want := []string{"network/delete/old0", "network/create/va", "network/create/br0",
		"network/set/va", "network/controller/va", "network/up/va", "network/up/br0", "network/ipv4/br0",
		"network/route/10.5.0.0/24/254/100"}
	if !slices.Equal(got, want) {
		t.Fatalf("ops %v\nwant %v", got, want)
	}
	dep := map[string][]string{}
	for _, op := range o {
		dep[op.ID] = op.DependsOn
		if op.ID == "network/create/vb" {
			t.Fatal("vb created twice (it is va's peer)")
		}
	}
	has := func(id, on string) {
		t.Helper()
		if !slices.Contains(dep[id], on) {
			t.Errorf("%s does not depend on %s: %v", id, on, dep[id])
		}
	}
	has("network/create/va", "network/delete/old0")
	has("network/set/va", "network/create/va")
	has("network/controller/va", "network/set/va")
	has("network/controller/va", "network/create/br0")
	has("network/up/va", "network/controller/va")
	has("network/ipv4/br0", "network/up/br0")
	for _, d := range []string{"network/ipv4/br0", "network/up/va", "network/create/br0"} {
		has("network/route/10.5.0.0/24/254/100", d)
	}
	// The engine accepts the plan (no cycles, unique IDs).
	e := engine.New([]plugin.Plugin{New(Options{})})
	if _, err := e.PlanBetween(map[string]any{"network": cur}, map[string]any{"network": des}); err != nil {
		t.Fatal(err)
	}
}

func TestPlanPartialAndZero(t *testing.T) {
	cur := mustState(t, `{"interfaces":[
		{"name":"br0","type":"bridge","state":"up","mtu":1500,"controller":"","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24},{"ip":"10.0.0.2","prefix_length":24}]},"ipv6":{"address":[]}},
		{"name":"va","type":"veth","state":"up","mtu":1500,"controller":"br0","veth":{"peer":"vb"},"ipv4":{"address":[]},"ipv6":{"address":[]}}],
		"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.0.0.254","table_id":254,"metric":100},
			{"destination":"10.6.0.0/24","next_hop_interface":"br0","table_id":100,"metric":0}]}}`)
	// The current state itself plans nothing.
	if o := ops(t, cur, cur); len(o) != 0 {
		t.Fatalf("current vs itself: %v", ids(o))
	}
	// Naming only an MTU touches nothing else.
	o := ops(t, cur, mustState(t, `{"interfaces":[{"name":"br0","mtu":1400}]}`))
	if got := ids(o); !slices.Equal(got, []string{"network/set/br0"}) {
		t.Fatalf("%v", got)
	}
	// A listed address set replaces.
	o = ops(t, cur, mustState(t, `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24},{"ip":"10.0.0.3","prefix_length":24}]}}]}`))
	var d opData
	if len(o) != 1 || json.Unmarshal(o[0].Data, &d) != nil || !slices.Equal(d.Del, []string{"10.0.0.2/24"}) || !slices.Equal(d.Add, []string{"10.0.0.3/24"}) {
		t.Fatalf("%+v %+v", o, d)
	}
	// An absent route with wildcard metric removes the one in table 100 only.
	o = ops(t, cur, mustState(t, `{"routes":{"config":[{"destination":"10.6.0.0/24","table_id":100,"state":"absent"},{"destination":"10.9.0.0/24","state":"absent"}]}}`))
	if got := ids(o); !slices.Equal(got, []string{"network/route-del/10.6.0.0/24/100/0"}) {
		t.Fatalf("%v", got)
	}
	// A route with a changed gateway is replaced.
	o = ops(t, cur, mustState(t, `{"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.0.0.253","metric":100}]}}`))
	if len(o) != 1 || !strings.Contains(o[0].Description, "replace route") {
		t.Fatalf("%+v", o)
	}
	// Changes the kernel cannot make in place are plan errors, not ops.
	for _, bad := range []string{
		`{"interfaces":[{"name":"br0","type":"veth","veth":{"peer":"x"}}]}`,
		`{"interfaces":[{"name":"va","type":"veth","veth":{"peer":"other"}}]}`,
		`{"interfaces":[{"name":"vz","type":"veth","veth":{"peer":"br0"}}]}`,
	} {
		if _, err := plan(cur, mustState(t, bad)); err == nil {
			t.Errorf("planned %s", bad)
		}
	}
	// A missing link this document does not create may come from a plugin
	// that applies first (ovs, networkmanager): its ops start with a check
	// that it exists, which every other op of the link waits for.
	o = ops(t, cur, mustState(t, `{"interfaces":[{"name":"ovsbr","type":"openvswitch","mtu":1400,"ipv4":{"address":[{"ip":"10.1.0.1","prefix_length":24}]}},{"name":"eth9","type":"ethernet"}]}`))
	if got := ids(o); !slices.Equal(got, []string{"network/expect/ovsbr", "network/set/ovsbr", "network/ipv4/ovsbr", "network/expect/eth9"}) {
		t.Fatalf("%v", got)
	}
	if !slices.Equal(o[1].DependsOn, []string{"network/expect/ovsbr"}) {
		t.Fatalf("set does not wait for the check: %v", o[1].DependsOn)
	}
	// bridge.port: listed ports join, current unlisted ports leave.
	o = ops(t, cur, mustState(t, `{"interfaces":[{"name":"br0","type":"bridge","bridge":{"port":[]}}]}`))
	if got := ids(o); !slices.Equal(got, []string{"network/controller/va"}) {
		t.Fatalf("%v", got)
	}
}

// Rollback of a transaction that created things removes them: Subset
// gives what did not exist as absent, and planning that against the
// post-apply state deletes it.
func TestSubsetAbsentForCreated(t *testing.T) {
	pre := mustState(t, `{"interfaces":[{"name":"br0","type":"bridge","state":"up","mtu":1500,"controller":"","ipv4":{"address":[{"ip":"10.99.0.1","prefix_length":24}]},"ipv6":{"address":[]}}],
		"routes":{"config":[]}}`)
	des := mustState(t, `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.98.0.1","prefix_length":24}]}},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br0"}],
		"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.98.0.254","metric":7}]}}`)
	o := ops(t, pre, des)
	var items []string
	for _, op := range o {
		if !slices.Contains(items, op.Item) {
			items = append(items, op.Item)
		}
	}
	sub := subset(pre, items)
	b, _ := json.Marshal(sub)
	want := `{"interfaces":[{"name":"va","state":"absent"},{"name":"br0","type":"bridge","state":"up","mtu":1500,"controller":"","ipv4":{"address":[{"ip":"10.99.0.1","prefix_length":24}]},"ipv6":{"address":[]}}],"routes":{"config":[{"destination":"10.5.0.0/24","table_id":254,"metric":7,"state":"absent"}]}}`
	if string(b) != want {
		t.Fatalf("subset\n%s\nwant\n%s", b, want)
	}
	post := mustState(t, `{"interfaces":[{"name":"br0","type":"bridge","state":"up","mtu":1500,"controller":"","ipv4":{"address":[{"ip":"10.98.0.1","prefix_length":24}]},"ipv6":{"address":[]}},
		{"name":"va","type":"veth","state":"up","controller":"br0","veth":{"peer":"vb"},"ipv4":{"address":[]},"ipv6":{"address":[]}},
		{"name":"vb","type":"veth","state":"down","controller":"","veth":{"peer":"va"},"ipv4":{"address":[]},"ipv6":{"address":[]}}],
		"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.98.0.254","next_hop_interface":"br0","table_id":254,"metric":7}]}}`)
	rb := ops(t, post, sub)
	got := ids(rb)
	want2 := []string{"network/delete/va", "network/ipv4/br0", "network/route-del/10.5.0.0/24/254/7"}
	if !slices.Equal(got, want2) {
		t.Fatalf("rollback ops %v, want %v", got, want2)
	}
	if k, ok := parseRouteItem("routes/2001:db8::/64/100/1024"); !ok || k.dest != "2001:db8::/64" || k.table != 100 || k.metric != 1024 {
		t.Fatalf("parseRouteItem: %+v %v", k, ok)
	}
}
