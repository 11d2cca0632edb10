package network

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Op kinds, in opData.Kind.
const (
	kindCreate     = "create"
	kindDelete     = "delete"
	kindSet        = "set"
	kindExpect     = "expect"
	kindController = "controller"
	kindUp         = "up"
	kindDown       = "down"
	kindAddr       = "addresses"
	kindRouteAdd   = "route-add"
	kindRouteRepl  = "route-replace"
	kindRouteDel   = "route-del"
)

// opData is the machine form of a network op.
type opData struct {
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
	// Link is the link to create (create only).
	Link *Interface `json:"link,omitempty"`
	// Set: MTU and MAC address (0 / "" = leave alone).
	MTU int    `json:"mtu,omitempty"`
	MAC string `json:"mac_address,omitempty"`
	// Controller: the master's name, "" to detach.
	Controller *string `json:"controller,omitempty"`
	// Addresses: CIDRs to remove first, then to add.
	Del []string `json:"del,omitempty"`
	Add []string `json:"add,omitempty"`
	// Route: the route to add or replace (desired), or to delete (current).
	Route *Route `json:"route,omitempty"`
}

func ifPath(name string) string { return fmt.Sprintf("interfaces[%q]", name) }

// ItemInterface and ItemRoute are the Op.Item forms.
func ItemInterface(name string) string { return "interfaces/" + name }

// ItemRoute is "routes/DEST/TABLE/METRIC".
func ItemRoute(k routeKey) string {
	return fmt.Sprintf("routes/%s/%d/%d", k.dest, k.table, k.metric)
}

// routeKey identifies a route the way the kernel does for replace/delete.
type routeKey struct {
	dest   string // canonical prefix
	table  int
	metric int
}

func (k routeKey) String() string {
	return fmt.Sprintf("%s table %d metric %d", k.dest, k.table, k.metric)
}

func keyOf(r *Route) (routeKey, bool) {
	dst, err := parseCIDR(r.Destination)
	if err != nil {
		return routeKey{}, false
	}
	m := defaultMetric(dst)
	if r.Metric != nil {
		m = *r.Metric
		if m == 0 && dst.Addr().Is6() {
			m = 1024 // the kernel stores IPv6 metric 0 as 1024
		}
	}
	return routeKey{dest: dst.String(), table: tableOf(r.TableID), metric: m}, true
}

// planner accumulates ops and what later ops must wait for.
type planner struct {
	ops       []plugin.Op
	deletes   []string          // delete op IDs
	linkOps   []string          // every create/set/controller/up/down/address op
	createdBy map[string]string // link name → op that creates it
	last      map[string]string // link name → last op of its chain
	expected  map[string]bool   // missing links the plan expects another plugin to make
}

func (pl *planner) add(op plugin.Op) {
	op.ID = "network/" + op.ID
	pl.ops = append(pl.ops, op)
}

// Plan implements plugin.Plugin. Per link: create (waits for every
// delete), set mtu/mac, set controller (waits for the controller's
// creation), up or down, then addresses; routes wait for every link op.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	cur, _ := current.(*State)
	des, _ := desired.(*State)
	return plan(cur, des)
}

func plan(cur, des *State) ([]plugin.Op, error) {
	if des == nil {
		return nil, nil
	}
	if cur == nil {
		cur = &State{}
	}
	curBy := map[string]*Interface{}
	for _, c := range cur.Interfaces {
		if c != nil {
			curBy[c.Name] = c
		}
	}
	want, err := expandPorts(cur, des)
	if err != nil {
		return nil, err
	}
	desBy := map[string]*Interface{}
	for _, d := range want {
		desBy[d.Name] = d
	}
	pl := &planner{createdBy: map[string]string{}, last: map[string]string{}, expected: map[string]bool{}}

	// Deletes first: they free names and ports for what follows.
	for _, d := range want {
		if d.State != StateAbsent {
			continue
		}
		c := curBy[d.Name]
		if c == nil {
			continue
		}
		if c.Type == TypeLoopback {
			return nil, fmt.Errorf("%s: the loopback interface cannot be removed", ifPath(d.Name))
		}
		id := "delete/" + d.Name
		pl.add(plugin.Op{
			ID: id, Item: ItemInterface(d.Name),
			Description: fmt.Sprintf("delete %s %s", c.Type, d.Name) + deleteNote(c),
			Data:        plugin.MustData(opData{Kind: kindDelete, Name: d.Name}),
			// Rollback recreates the link with its settings and
			// addresses, but not the ports or routes it took along.
			Reversible: false,
			Changes:    []plugin.Change{{Path: ifPath(d.Name) + ".state", Current: c.State, Desired: StateAbsent}},
		})
		pl.deletes = append(pl.deletes, "network/"+id)
	}
	gone := func(name string) bool {
		d := desBy[name]
		return d != nil && d.State == StateAbsent
	}

	// Creates. A veth's create makes its peer too.
	for _, d := range want {
		if d.State == StateAbsent || curBy[d.Name] != nil {
			continue
		}
		if _, ok := pl.createdBy[d.Name]; ok {
			continue // made as a veth peer
		}
		if !slices.Contains(creatable, d.Type) {
			// Not ours to create: another plugin that applies first
			// (ovs, networkmanager) may make it. Plan against an unknown
			// link; apply fails clearly if it is still missing.
			pl.expected[d.Name] = true
			continue
		}
		link := &Interface{Name: d.Name, Type: d.Type, Veth: d.Veth, VXLAN: d.VXLAN, VLAN: d.VLAN, Bond: d.Bond}
		deps := slices.Clone(pl.deletes)
		desc := fmt.Sprintf("create %s %s", d.Type, d.Name)
		switch d.Type {
		case TypeVeth:
			peer := d.Veth.Peer
			if curBy[peer] != nil && !gone(peer) {
				return nil, fmt.Errorf("%s.veth.peer: cannot create veth %s: its peer %s already exists (remove it first with state: absent, or name another peer)", ifPath(d.Name), d.Name, peer)
			}
			desc += " with peer " + peer
		case TypeVXLAN:
			desc += fmt.Sprintf(" (VNI %d)", d.VXLAN.ID)
			if b := d.VXLAN.BaseIface; b != "" {
				if id, ok := pl.createdBy[b]; ok {
					deps = append(deps, id)
				} else if curBy[b] == nil || gone(b) {
					return nil, fmt.Errorf("%s.vxlan.base_iface: %s does not exist and this document does not create it", ifPath(d.Name), b)
				}
			}
		case TypeVLAN:
			desc += fmt.Sprintf(" (id %d on %s)", d.VLAN.ID, d.VLAN.BaseIface)
			if id, ok := pl.createdBy[d.VLAN.BaseIface]; ok {
				deps = append(deps, id)
			} else if b := d.VLAN.BaseIface; curBy[b] == nil || gone(b) {
				return nil, fmt.Errorf("%s.vlan.base_iface: %s does not exist and this document does not create it", ifPath(d.Name), b)
			}
		}
		id := "create/" + d.Name
		pl.add(plugin.Op{
			ID: id, Item: ItemInterface(d.Name), Description: desc,
			Data:       plugin.MustData(opData{Kind: kindCreate, Name: d.Name, Link: link}),
			Reversible: true, DependsOn: deps,
			Changes: []plugin.Change{{Path: ifPath(d.Name) + ".state", Current: StateAbsent, Desired: nonEmpty(d.State, StateUp)}},
		})
		pl.createdBy[d.Name] = "network/" + id
		pl.last[d.Name] = "network/" + id
		pl.linkOps = append(pl.linkOps, "network/"+id)
		if d.Type == TypeVeth {
			pl.createdBy[d.Veth.Peer] = "network/" + id
			pl.last[d.Veth.Peer] = "network/" + id
		}
	}

	for _, d := range want {
		if d.State == StateAbsent {
			continue
		}
		c := curBy[d.Name]
		fresh := false
		if _, ok := pl.createdBy[d.Name]; ok {
			fresh = true
			t := d.Type
			if t == "" {
				t = TypeVeth // made as some other entry's peer
			}
			c = &Interface{Name: d.Name, Type: t, State: StateDown, Controller: ptr(""), IPv4: &IPConfig{}, IPv6: &IPConfig{}}
		}
		if c == nil && pl.expected[d.Name] {
			c = &Interface{Name: d.Name, Type: d.Type, State: "unknown", Controller: ptr("(unknown)")}
		}
		if c == nil {
			continue
		}
		if !fresh && !pl.expected[d.Name] {
			if err := sameKind(d, c); err != nil {
				return nil, err
			}
		}
		if err := pl.planLink(d, c, fresh, curBy, desBy); err != nil {
			return nil, err
		}
	}
	if err := pl.planRoutes(cur, des, curBy, desBy); err != nil {
		return nil, err
	}
	return pl.ops, nil
}

func deleteNote(c *Interface) string {
	if c.Type == TypeBridge {
		return " (its ports are detached)"
	}
	if c.Type == TypeVeth && c.Veth != nil && c.Veth.Peer != "" {
		return " (and its peer " + c.Veth.Peer + ")"
	}
	return ""
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sameKind refuses to plan across a change the kernel cannot make in place.
func sameKind(d, c *Interface) error {
	path := ifPath(d.Name)
	recreate := "; remove it first (state: absent) and create it again in a second apply"
	if d.Type != "" && d.Type != c.Type {
		return fmt.Errorf("%s.type: %s exists as a %s, not a %s%s", path, d.Name, c.Type, d.Type, recreate)
	}
	if d.Veth != nil && c.Veth != nil && c.Veth.Peer != "" && d.Veth.Peer != c.Veth.Peer {
		return fmt.Errorf("%s.veth.peer: the peer of %s is %s, not %s; a veth's peer cannot change%s", path, d.Name, c.Veth.Peer, d.Veth.Peer, recreate)
	}
	if dv, cv := d.VXLAN, c.VXLAN; dv != nil && cv != nil {
		diff := func(field string, dv, cv any) error {
			return fmt.Errorf("%s.vxlan.%s: %s has %v, not %v; VXLAN settings of an existing link are not changed%s", path, field, d.Name, cv, dv, recreate)
		}
		switch {
		case dv.ID != cv.ID:
			return diff("id", dv.ID, cv.ID)
		case dv.Remote != "" && !sameIP(dv.Remote, cv.Remote):
			return diff("remote", dv.Remote, nonEmpty(cv.Remote, "(none)"))
		case dv.Local != "" && !sameIP(dv.Local, cv.Local):
			return diff("local", dv.Local, nonEmpty(cv.Local, "(none)"))
		case dv.DestinationPort != 0 && dv.DestinationPort != cv.DestinationPort:
			return diff("destination_port", dv.DestinationPort, cv.DestinationPort)
		case dv.BaseIface != "" && dv.BaseIface != cv.BaseIface:
			return diff("base_iface", dv.BaseIface, nonEmpty(cv.BaseIface, "(none)"))
		}
	}
	if dv, cv := d.VLAN, c.VLAN; dv != nil && cv != nil && (dv.ID != cv.ID || dv.BaseIface != cv.BaseIface) {
		return fmt.Errorf("%s.vlan: %s is VLAN %d on %s, not %d on %s%s", path, d.Name, cv.ID, cv.BaseIface, dv.ID, dv.BaseIface, recreate)
	}
	if d.Bond != nil && c.Bond != nil && d.Bond.Mode != "" && d.Bond.Mode != c.Bond.Mode {
		return fmt.Errorf("%s.bond.mode: %s is in mode %s, not %s%s", path, d.Name, c.Bond.Mode, d.Bond.Mode, recreate)
	}
	return nil
}

func sameIP(a, b string) bool {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return x.Unmap() == y.Unmap()
}

func sameMAC(a, b string) bool {
	x, err1 := net.ParseMAC(a)
	y, err2 := net.ParseMAC(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return x.String() == y.String()
}

// planLink plans one link that exists or is created by this plan.
func (pl *planner) planLink(d, c *Interface, fresh bool, curBy, desBy map[string]*Interface) error {
	name, path := d.Name, ifPath(d.Name)
	chain := func(op plugin.Op, extra ...string) {
		var deps []string
		if l, ok := pl.last[name]; ok {
			deps = append(deps, l)
		}
		for _, e := range extra {
			if e != "" && !slices.Contains(deps, e) {
				deps = append(deps, e)
			}
		}
		op.DependsOn = deps
		op.Item = ItemInterface(name)
		op.Reversible = true
		pl.add(op)
		pl.last[name] = "network/" + op.ID
		pl.linkOps = append(pl.linkOps, "network/"+op.ID)
	}

	// A link the plan does not create and does not see: check it is
	// there (another plugin may have made it) before touching it.
	if pl.expected[name] {
		chain(plugin.Op{ID: "expect/" + name, Description: "check that " + name + " exists",
			Data:    plugin.MustData(opData{Kind: kindExpect, Name: name}),
			Changes: []plugin.Change{{Path: path, Current: StateAbsent, Desired: "present"}}})
	}

	// MTU and MAC address.
	var set opData
	var changes []plugin.Change
	var what []string
	if d.MTU != nil && (fresh || c.MTU == nil || *d.MTU != *c.MTU) {
		set.MTU = *d.MTU
		changes = append(changes, plugin.Change{Path: path + ".mtu", Current: mtuShown(c, fresh), Desired: *d.MTU})
		what = append(what, fmt.Sprintf("mtu %d", *d.MTU))
	}
	if d.MACAddress != "" && (fresh || !sameMAC(d.MACAddress, c.MACAddress)) {
		hw, _ := net.ParseMAC(d.MACAddress)
		set.MAC = hw.String()
		var cm any
		if !fresh && c.MACAddress != "" {
			cm = c.MACAddress
		}
		changes = append(changes, plugin.Change{Path: path + ".mac_address", Current: cm, Desired: set.MAC})
		what = append(what, "mac_address "+set.MAC)
	}
	if len(changes) > 0 {
		set.Kind, set.Name = kindSet, name
		chain(plugin.Op{ID: "set/" + name, Description: fmt.Sprintf("set %s %s", name, strings.Join(what, ", ")),
			Data: plugin.MustData(set), Changes: changes})
	}

	// Controller (bridge port).
	if d.Controller != nil && *d.Controller != deref(c.Controller) {
		ctl := *d.Controller
		var dep string
		desc := fmt.Sprintf("detach %s from %s", name, deref(c.Controller))
		if ctl != "" {
			desc = fmt.Sprintf("make %s a port of %s", name, ctl)
			if id, ok := pl.createdBy[ctl]; ok {
				dep = id
			} else if desBy[ctl] != nil && desBy[ctl].State == StateAbsent {
				return fmt.Errorf("%s.controller: %s is removed by this document", path, ctl)
			} else if curBy[ctl] == nil {
				desc += " (expects " + ctl + " to exist by then: made by another plugin)"
			}
		}
		chain(plugin.Op{ID: "controller/" + name, Description: desc,
			Data:    plugin.MustData(opData{Kind: kindController, Name: name, Controller: &ctl}),
			Changes: []plugin.Change{{Path: path + ".controller", Current: deref(c.Controller), Desired: ctl}}}, dep)
	}

	// Administrative state.
	wantState := d.State
	if fresh && wantState == "" {
		wantState = StateUp
	}
	if (wantState == StateUp || wantState == StateDown) && wantState != c.State {
		chain(plugin.Op{ID: wantState + "/" + name, Description: fmt.Sprintf("set %s %s", name, wantState),
			Data:    plugin.MustData(opData{Kind: wantState, Name: name}),
			Changes: []plugin.Change{{Path: path + ".state", Current: c.State, Desired: wantState}}})
	}

	// Addresses, per family; the listed set replaces.
	for _, fam := range []struct {
		key  string
		d, c *IPConfig
	}{{"ipv4", d.IPv4, c.IPv4}, {"ipv6", d.IPv6, c.IPv6}} {
		if fam.d == nil {
			continue
		}
		want := cidrs(fam.d)
		have := []string{}
		if fam.c != nil {
			have = cidrs(fam.c)
		}
		var add, del []string
		for _, a := range want {
			if !slices.Contains(have, a) {
				add = append(add, a)
			}
		}
		for _, a := range have {
			if !slices.Contains(want, a) {
				del = append(del, a)
			}
		}
		if len(add) == 0 && len(del) == 0 {
			continue
		}
		var parts []string
		if len(del) > 0 {
			parts = append(parts, "remove "+strings.Join(del, ", "))
		}
		if len(add) > 0 {
			parts = append(parts, "add "+strings.Join(add, ", "))
		}
		op := plugin.Op{
			ID:          fam.key + "/" + name,
			Item:        ItemInterface(name),
			Description: fmt.Sprintf("%s %s: %s", name, fam.key, strings.Join(parts, "; ")),
			Data:        plugin.MustData(opData{Kind: kindAddr, Name: name, Add: add, Del: del}),
			Reversible:  true,
			Changes:     []plugin.Change{{Path: path + "." + fam.key + ".address", Current: have, Desired: want}},
		}
		if l, ok := pl.last[name]; ok {
			op.DependsOn = []string{l}
		}
		pl.add(op)
		pl.linkOps = append(pl.linkOps, "network/"+op.ID)
	}
	return nil
}

func mtuShown(c *Interface, fresh bool) any {
	if fresh || c.MTU == nil {
		return nil
	}
	return *c.MTU
}

// cidrs is the canonical, sorted "ip/prefix" list of a config.
func cidrs(c *IPConfig) []string {
	out := make([]string, 0, len(c.Address))
	for _, a := range c.Address {
		ip, err := netip.ParseAddr(a.IP)
		if err != nil {
			out = append(out, a.CIDR())
			continue
		}
		s := fmt.Sprintf("%s/%d", ip.Unmap(), a.PrefixLength)
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// expandPorts folds bridge.port lists into the ports' controller fields:
// a listed port gets the bridge as controller; a current port of that
// bridge that is not listed is detached. It returns copies.
func expandPorts(cur, des *State) ([]*Interface, error) {
	out := make([]*Interface, 0, len(des.Interfaces))
	idx := map[string]int{}
	for _, d := range des.Interfaces {
		if d == nil {
			continue
		}
		cp := *d
		idx[d.Name] = len(out)
		out = append(out, &cp)
	}
	for _, d := range des.Interfaces {
		if d == nil || d.Bridge == nil || d.Bridge.Port == nil || d.State == StateAbsent {
			continue
		}
		listed := map[string]bool{}
		for _, port := range d.Bridge.Port {
			listed[port.Name] = true
			i, ok := idx[port.Name]
			if !ok {
				idx[port.Name] = len(out)
				out = append(out, &Interface{Name: port.Name, Controller: ptr(d.Name)})
				continue
			}
			if c := out[i].Controller; c != nil && *c != d.Name {
				return nil, fmt.Errorf("%s.controller: %s is listed as a port of %s but names %s as controller; a link can be a port of one bridge only", ifPath(port.Name), port.Name, d.Name, *c)
			}
			out[i].Controller = ptr(d.Name)
		}
		for _, c := range cur.Interfaces {
			if c == nil || listed[c.Name] || deref(c.Controller) != d.Name {
				continue
			}
			i, ok := idx[c.Name]
			if !ok {
				idx[c.Name] = len(out)
				out = append(out, &Interface{Name: c.Name, Controller: ptr("")})
				continue
			}
			if out[i].Controller == nil {
				out[i].Controller = ptr("")
			} else if *out[i].Controller == d.Name {
				return nil, fmt.Errorf("%s.controller: %s names %s as controller but is not in %s.bridge.port", ifPath(c.Name), c.Name, d.Name, ifPath(d.Name))
			}
		}
	}
	return out, nil
}

// planRoutes adds, replaces or removes the routes desired names.
func (pl *planner) planRoutes(cur, des *State, curBy, desBy map[string]*Interface) error {
	if des.Routes == nil {
		return nil
	}
	curRoutes := map[routeKey]*Route{}
	var curKeys []routeKey
	if cur.Routes != nil {
		for _, r := range cur.Routes.Config {
			if r == nil {
				continue
			}
			if k, ok := keyOf(r); ok {
				if _, dup := curRoutes[k]; !dup {
					curKeys = append(curKeys, k)
				}
				curRoutes[k] = r
			}
		}
	}
	planned := map[string]bool{}
	for i, r := range des.Routes.Config {
		if r == nil {
			continue
		}
		path := fmt.Sprintf("routes.config[%d]", i)
		k, ok := keyOf(r)
		if !ok {
			return fmt.Errorf("%s.destination: invalid CIDR %q", path, r.Destination)
		}
		if r.State == StateAbsent {
			for _, ck := range curKeys {
				c := curRoutes[ck]
				if !absentMatches(r, k, ck, c) {
					continue
				}
				id := "route-del/" + ItemRoute(ck)[len("routes/"):]
				if planned[id] {
					continue
				}
				planned[id] = true
				pl.add(plugin.Op{
					ID: id, Item: ItemRoute(ck),
					Description: "remove route " + describeRoute(c),
					Data:        plugin.MustData(opData{Kind: kindRouteDel, Route: c}),
					Reversible:  true,
					Changes:     []plugin.Change{{Path: routePath(ck), Current: describeRoute(c), Desired: StateAbsent}},
				})
			}
			continue
		}
		if nh := r.NextHopInterface; nh != "" && desBy[nh] != nil && desBy[nh].State == StateAbsent {
			return fmt.Errorf("%s.next_hop_interface: %s is removed by this document", path, nh)
		}
		c := curRoutes[k]
		kind, verb := kindRouteAdd, "add"
		var changes []plugin.Change
		if c == nil {
			changes = []plugin.Change{{Path: routePath(k), Current: StateAbsent, Desired: describeRoute(r)}}
		} else {
			changes = routeDiff(k, r, c)
			if len(changes) == 0 {
				continue
			}
			kind, verb = kindRouteRepl, "replace"
		}
		id := "route/" + ItemRoute(k)[len("routes/"):]
		want := *r
		want.Metric = ptr(k.metric)
		want.TableID = k.table
		pl.add(plugin.Op{
			ID: id, Item: ItemRoute(k),
			Description: verb + " route " + describeRoute(&want),
			Data:        plugin.MustData(opData{Kind: kind, Route: &want}),
			Reversible:  true,
			// A gateway must be reachable: after every link and address.
			DependsOn: slices.Clone(pl.linkOps),
			Changes:   changes,
		})
	}
	return nil
}

func absentMatches(r *Route, k, ck routeKey, c *Route) bool {
	if ck.dest != k.dest || ck.table != k.table {
		return false
	}
	if r.Metric != nil && ck.metric != k.metric {
		return false
	}
	if r.NextHopAddress != "" && !sameIP(r.NextHopAddress, c.NextHopAddress) {
		return false
	}
	if r.NextHopInterface != "" && r.NextHopInterface != c.NextHopInterface {
		return false
	}
	if r.RouteType != "" && nonEmpty(r.RouteType, RouteUnicast) != nonEmpty(c.RouteType, RouteUnicast) {
		return false
	}
	return true
}

func routePath(k routeKey) string {
	return fmt.Sprintf("routes.config[%q]", k.String())
}

// routeDiff compares the fields desired names.
func routeDiff(k routeKey, d, c *Route) []plugin.Change {
	var out []plugin.Change
	path := routePath(k)
	if nonEmpty(d.RouteType, RouteUnicast) != nonEmpty(c.RouteType, RouteUnicast) {
		out = append(out, plugin.Change{Path: path + ".route_type", Current: nonEmpty(c.RouteType, RouteUnicast), Desired: nonEmpty(d.RouteType, RouteUnicast)})
	}
	if d.NextHopAddress != "" && !sameIP(d.NextHopAddress, c.NextHopAddress) || d.NextHopAddress == "" && c.NextHopAddress != "" && d.NextHopInterface != "" {
		out = append(out, plugin.Change{Path: path + ".next_hop_address", Current: c.NextHopAddress, Desired: d.NextHopAddress})
	}
	if d.NextHopInterface != "" && d.NextHopInterface != c.NextHopInterface {
		out = append(out, plugin.Change{Path: path + ".next_hop_interface", Current: c.NextHopInterface, Desired: d.NextHopInterface})
	}
	if d.Source != "" && !sameIP(d.Source, c.Source) {
		out = append(out, plugin.Change{Path: path + ".source", Current: c.Source, Desired: d.Source})
	}
	return out
}

func describeRoute(r *Route) string {
	var b strings.Builder
	if r.RouteType != "" && r.RouteType != RouteUnicast {
		b.WriteString(r.RouteType + " ")
	}
	b.WriteString(r.Destination)
	if r.NextHopAddress != "" {
		b.WriteString(" via " + r.NextHopAddress)
	}
	if r.NextHopInterface != "" {
		b.WriteString(" dev " + r.NextHopInterface)
	}
	if r.Source != "" {
		b.WriteString(" src " + r.Source)
	}
	b.WriteString(" table " + strconv.Itoa(tableOf(r.TableID)))
	if r.Metric != nil {
		b.WriteString(" metric " + strconv.Itoa(*r.Metric))
	}
	return b.String()
}

// Subset implements plugin.Plugin: the pre-apply state of the touched
// items. A link or route that did not exist then is given as state
// "absent", so that rolling back removes what the transaction created.
func (p *Plugin) Subset(st any, items []string) any {
	return subset(st, items)
}

func subset(st any, items []string) *State {
	s, _ := st.(*State)
	if s == nil {
		s = &State{}
	}
	out := &State{}
	curBy := map[string]*Interface{}
	for _, c := range s.Interfaces {
		if c != nil {
			curBy[c.Name] = c
		}
	}
	curRoutes := map[routeKey]*Route{}
	if s.Routes != nil {
		for _, r := range s.Routes.Config {
			if r == nil {
				continue
			}
			if k, ok := keyOf(r); ok {
				curRoutes[k] = r
			}
		}
	}
	seen := map[string]bool{}
	for _, it := range items {
		if seen[it] {
			continue
		}
		seen[it] = true
		switch {
		case strings.HasPrefix(it, "interfaces/"):
			name := strings.TrimPrefix(it, "interfaces/")
			c := curBy[name]
			if c == nil {
				out.Interfaces = append(out.Interfaces, &Interface{Name: name, State: StateAbsent})
				continue
			}
			out.Interfaces = append(out.Interfaces, restorable(c))
		case strings.HasPrefix(it, "routes/"):
			k, ok := parseRouteItem(it)
			if !ok {
				continue
			}
			if out.Routes == nil {
				out.Routes = &Routes{}
			}
			if r := curRoutes[k]; r != nil {
				cp := *r
				cp.Metric = ptr(k.metric)
				cp.TableID = k.table
				out.Routes.Config = append(out.Routes.Config, &cp)
			} else {
				out.Routes.Config = append(out.Routes.Config, &Route{Destination: k.dest, TableID: k.table, Metric: ptr(k.metric), State: StateAbsent})
			}
		}
	}
	return out
}

// restorable copies what a link's previous state can declare.
func restorable(c *Interface) *Interface {
	r := &Interface{Name: c.Name, Type: c.Type, State: c.State, MACAddress: c.MACAddress}
	if c.MTU != nil {
		r.MTU = ptr(*c.MTU)
	}
	r.Controller = ptr(deref(c.Controller))
	r.IPv4 = &IPConfig{Address: []Address{}}
	r.IPv6 = &IPConfig{Address: []Address{}}
	if c.IPv4 != nil {
		r.IPv4.Address = slices.Clone(c.IPv4.Address)
	}
	if c.IPv6 != nil {
		r.IPv6.Address = slices.Clone(c.IPv6.Address)
	}
	if c.Veth != nil && c.Veth.Peer != "" {
		r.Veth = &Veth{Peer: c.Veth.Peer}
	}
	if c.VXLAN != nil {
		v := *c.VXLAN
		r.VXLAN = &v
	}
	if c.VLAN != nil {
		v := *c.VLAN
		r.VLAN = &v
	}
	if c.Bond != nil {
		v := *c.Bond
		r.Bond = &v
	}
	return r
}

// parseRouteItem reads "routes/DEST/TABLE/METRIC" (DEST holds a slash).
func parseRouteItem(it string) (routeKey, bool) {
	parts := strings.Split(strings.TrimPrefix(it, "routes/"), "/")
	if len(parts) != 4 {
		return routeKey{}, false
	}
	t, err1 := strconv.Atoi(parts[2])
	m, err2 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil {
		return routeKey{}, false
	}
	dst, err := parseCIDR(parts[0] + "/" + parts[1])
	if err != nil {
		return routeKey{}, false
	}
	return routeKey{dest: dst.String(), table: t, metric: m}, true
}
