package network

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// bedPlugin starts an empty network namespace and a plugin aimed at it.
func bedPlugin(t testing.TB) (*testbed.NetNS, *Plugin) {
	t.Helper()
	bed := testbed.NewNetNS(t)
	p := New(Options{NetNS: bed.NetNSPath()})
	t.Cleanup(func() { p.Close() })
	return bed, p
}

func tctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sh runs commands ("ip link add br0 type bridge") inside the bed.
func sh(t testing.TB, bed *testbed.NetNS, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := bed.Exec(tctx(t), strings.Fields(c)...); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
}

// linkView is what the oracle and the plugin must agree on per link.
type linkView struct {
	Kind   string
	Up     bool
	MTU    int
	MAC    string
	Master string
	Peer   string
	Addrs  []string
}

// view is a comparable picture of the namespace.
type view struct {
	Links  map[string]linkView
	Routes []string
}

func (v view) String() string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

func ipJSON(t testing.TB, bed *testbed.NetNS, out any, args ...string) {
	t.Helper()
	s, err := bed.Exec(tctx(t), append([]string{"ip", "-j"}, args...)...)
	if err != nil {
		t.Fatalf("ip -j %v: %v", args, err)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("ip -j %v: %v\n%s", args, err, s)
	}
}

// oracle reads the bed with iproute2 (`ip -j`), an independent client of
// the same kernel, and applies the plugin's documented filters: no IPv6
// link-local or finite-lifetime addresses, no proto kernel/ra routes, no
// local table.
func oracle(t testing.TB, bed *testbed.NetNS) view {
	t.Helper()
	var links []struct {
		Name     string   `json:"ifname"`
		Flags    []string `json:"flags"`
		MTU      int      `json:"mtu"`
		Address  string   `json:"address"`
		Master   string   `json:"master"`
		Link     string   `json:"link"`
		NetNSID  *int     `json:"link_netnsid"`
		LinkType string   `json:"link_type"`
		Info     struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	ipJSON(t, bed, &links, "-d", "link", "show")
	var addrs []struct {
		Name string `json:"ifname"`
		Info []struct {
			Family string `json:"family"`
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
			Scope  string `json:"scope"`
			Valid  uint64 `json:"valid_life_time"`
		} `json:"addr_info"`
	}
	ipJSON(t, bed, &addrs, "addr", "show")
	v := view{Links: map[string]linkView{}}
	for _, l := range links {
		lv := linkView{Kind: l.Info.Kind, MTU: l.MTU, Master: l.Master}
		if lv.Kind == "" {
			switch l.LinkType {
			case "loopback":
				lv.Kind = TypeLoopback
			case "ether":
				lv.Kind = TypeEthernet
			default:
				lv.Kind = l.LinkType
			}
		}
		for _, f := range l.Flags {
			if f == "UP" {
				lv.Up = true
			}
		}
		if l.LinkType == "ether" {
			lv.MAC = l.Address
		}
		if lv.Kind == TypeVeth && l.NetNSID == nil {
			lv.Peer = l.Link
		}
		v.Links[l.Name] = lv
	}
	for _, a := range addrs {
		lv := v.Links[a.Name]
		for _, ai := range a.Info {
			if ai.Family == "inet6" && ai.Scope == "link" || ai.Valid != 4294967295 {
				continue
			}
			lv.Addrs = append(lv.Addrs, fmt.Sprintf("%s/%d", ai.Local, ai.Prefix))
		}
		sort.Strings(lv.Addrs)
		v.Links[a.Name] = lv
	}
	for _, fam := range []string{"-4", "-6"} {
		var routes []struct {
			Type     string `json:"type"`
			Dst      string `json:"dst"`
			Gateway  string `json:"gateway"`
			Dev      string `json:"dev"`
			Table    string `json:"table"`
			Protocol string `json:"protocol"`
			Metric   int    `json:"metric"`
			Prefsrc  string `json:"prefsrc"`
		}
		ipJSON(t, bed, &routes, fam, "route", "show", "table", "all")
		for _, r := range routes {
			if r.Table == "local" || r.Protocol == "kernel" || r.Protocol == "ra" {
				continue
			}
			dst := r.Dst
			if dst == "default" {
				dst = map[string]string{"-4": "0.0.0.0/0", "-6": "::/0"}[fam]
			} else if !strings.Contains(dst, "/") {
				dst += map[string]string{"-4": "/32", "-6": "/128"}[fam]
			}
			table := r.Table
			if table == "" || table == "main" {
				table = "254"
			}
			typ := r.Type
			if typ == "" {
				typ = "unicast"
			}
			dev := r.Dev
			if typ != "unicast" {
				dev = ""
			}
			v.Routes = append(v.Routes, fmt.Sprintf("%s %s via=%s dev=%s table=%s metric=%d", typ, dst, r.Gateway, dev, table, r.Metric))
		}
	}
	sort.Strings(v.Routes)
	return v
}

// viewOf turns the plugin's query into the same picture.
func viewOf(s *State) view {
	v := view{Links: map[string]linkView{}}
	for _, i := range s.Interfaces {
		lv := linkView{Kind: i.Type, Up: i.State == StateUp, MTU: deref(i.MTU), MAC: i.MACAddress, Master: deref(i.Controller)}
		if i.Veth != nil {
			lv.Peer = i.Veth.Peer
		}
		for _, c := range []*IPConfig{i.IPv4, i.IPv6} {
			if c != nil {
				lv.Addrs = append(lv.Addrs, cidrs(c)...)
			}
		}
		sort.Strings(lv.Addrs)
		v.Links[i.Name] = lv
	}
	if s.Routes != nil {
		for _, r := range s.Routes.Config {
			typ := nonEmpty(r.RouteType, RouteUnicast)
			v.Routes = append(v.Routes, fmt.Sprintf("%s %s via=%s dev=%s table=%d metric=%d", typ, r.Destination, r.NextHopAddress, r.NextHopInterface, r.TableID, deref(r.Metric)))
		}
	}
	sort.Strings(v.Routes)
	return v
}

func sameView(t testing.TB, what string, got, want view) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, want)
	}
}

func query(t testing.TB, p *Plugin) *State {
	t.Helper()
	st, err := p.Query(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.(*State)
}

// queryDoc is the plugin's query as a state document the engine decodes
// (so it goes through strict decoding and Validate, as a file would).
func queryDoc(t testing.TB, p *Plugin) *state.Document {
	t.Helper()
	b, err := json.Marshal(query(t, p))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := decodeDoc(t, p, string(b))
	if err != nil {
		t.Fatalf("query output is not a valid document: %v\n%s", err, b)
	}
	return doc
}

func newEngine(p *Plugin) *engine.Engine {
	e := engine.New([]plugin.Plugin{p})
	e.VerifyDelay = 50 * time.Millisecond
	return e
}

// planDoc plans a network document against the bed.
func planDoc(t testing.TB, p *Plugin, doc *state.Document) *engine.Plan {
	t.Helper()
	pl, err := newEngine(p).Plan(tctx(t), doc)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return pl
}

// apply plans and applies a document the way `op-dbus apply` does.
func apply(t testing.TB, p *Plugin, network string) (*engine.Plan, *engine.Result) {
	t.Helper()
	doc, err := decodeDoc(t, p, network)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return applyDoc(t, p, doc)
}

func applyDoc(t testing.TB, p *Plugin, doc *state.Document) (*engine.Plan, *engine.Result) {
	t.Helper()
	pl := planDoc(t, p, doc)
	return pl, newEngine(p).Apply(tctx(t), doc, pl)
}

func opIDs(pl *engine.Plan) []string { return ids(pl.Ops) }
