package nixos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/plugins/network"
	"github.com/op-dbus/op-dbus/plugins/networkmanager"
	"github.com/op-dbus/op-dbus/plugins/ovs"
	"github.com/op-dbus/op-dbus/plugins/systemd"
	"github.com/op-dbus/op-dbus/plugins/wireguard"
)

// networkModule writes network.nix (WireGuard is added by wireguardInto):
//
//   - networking.networkmanager.enable, from the systemd state, or because
//     the networkmanager plugin names profiles;
//   - NetworkManager profiles as networking.networkmanager.ensureProfiles;
//   - the network plugin's links as networking.bridges, networking.bonds,
//     networking.vlans and networking.interfaces (addresses, routes, MTU,
//     MAC), its default routes as networking.defaultGateway(6);
//   - Open vSwitch bridges as networking.vswitches.
//
// Every choice, mapped or left out, goes to REPORT.md. The output depends
// only on the input: every map is walked in sorted order, every list in
// the order of the state document.
func networkModule(ss *systemd.State, plugins map[string]any, in Input, r *report) (*Set, error) {
	g := &netGen{r: r, in: in, captured: capturedSource(in.Source), nmOwned: map[string]string{}}
	var (
		ns   network.State
		nms  networkmanager.State
		ovst ovs.State
		ws   wireguard.State
	)
	for _, p := range []struct {
		name string
		dst  any
		has  *bool
	}{{"network", &ns, &g.hasNet}, {"networkmanager", &nms, &g.hasNM}, {"ovs", &ovst, &g.hasOVS}, {"wireguard", &ws, nil}} {
		v, ok := plugins[p.name]
		if !ok || v == nil {
			continue
		}
		if err := decodeInto(v, p.dst); err != nil {
			return nil, fmt.Errorf("plugins.%s: %w", p.name, err)
		}
		if p.has != nil {
			*p.has = true
		}
	}
	g.wgRoutes = wireguardRoutes(&ws)

	nm := ss.Units["NetworkManager.service"]
	nmUnit := enabled(nm) || nm != nil && nm.ActiveState == "active"
	g.nmProfiles(&nms)
	g.nmEnabled = nmUnit || len(g.profiles) > 0
	switch {
	case nmUnit:
		g.head = append(g.head, Entry{Path: optPath("networking.networkmanager.enable"), Value: true,
			Comment: []string{"NetworkManager.service is enabled or active on this host."}})
	case g.nmEnabled:
		g.head = append(g.head, Entry{Path: optPath("networking.networkmanager.enable"), Value: true,
			Comment: []string{"The networkmanager plugin names profiles, which need NetworkManager."}})
		r.mapped("networkmanager (profiles present)", "networking.networkmanager.enable (in network.nix)")
	}

	g.links(&ns)
	if g.hasNet {
		r.left("DHCP leases", "a lease's addresses and routes are the DHCP client's, so the network plugin does not capture them; NixOS's default networking.useDHCP = true asks for a lease on every link without static addresses")
	}
	g.routes(&ns)
	g.vswitches(&ovst)
	g.missing(plugins)

	s := &Set{}
	s.Entries = append(s.Entries, g.head...)
	s.Entries = append(s.Entries, g.profiles...)
	if g.nmEnabled && len(g.ours) > 0 {
		names := sortedSet(g.ours)
		specs := make([]string, len(names))
		for i, n := range names {
			specs[i] = "interface-name:" + n
		}
		s.Entries = append(s.Entries, Entry{Path: optPath("networking.networkmanager.unmanaged"), Value: specs,
			Comment: []string{"NetworkManager keeps its hands off the links configured below by networking.*."}})
		r.mapped("links configured by networking.* below ("+strings.Join(names, ", ")+")",
			"networking.networkmanager.unmanaged (in network.nix), so NetworkManager does not fight them")
	}
	s.Entries = append(s.Entries, g.bridges...)
	s.Entries = append(s.Entries, g.bonds...)
	s.Entries = append(s.Entries, g.vlans...)
	for _, name := range sortedKeys(g.ifs) {
		s.Entries = append(s.Entries, Entry{Path: []string{"networking", "interfaces", name}, Value: g.ifs[name].set(), Comment: g.ifNotes[name]})
	}
	s.Entries = append(s.Entries, g.gateways...)
	s.Entries = append(s.Entries, g.switches...)
	s.Trailing = g.trailing
	return s, nil
}

// netGen collects network.nix in sections.
type netGen struct {
	r        *report
	in       Input
	captured bool // the state is a query (live or snapshot), not a written document

	hasNet, hasNM, hasOVS bool
	nmEnabled             bool

	// nmOwned: interface name → the NetworkManager profile that describes it.
	nmOwned map[string]string
	// ours: interfaces networking.* configures (for networkmanager.unmanaged).
	ours map[string]bool
	// wgRoutes: destinations networking.wireguard routes itself, by interface.
	wgRoutes map[string]map[string]bool

	head, profiles, bridges, bonds, vlans, gateways, switches []Entry

	ifs     map[string]*ifData
	ifNotes map[string][]string

	trailing []string
}

func optPath(p string) []string { return strings.Split(p, ".") }

func decodeInto(v, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// capturedSource says whether the state was read from a host (a live query
// or a snapshot of one) rather than written by someone: a query reports
// every MAC address and MTU, including the kernel's random MACs of virtual
// links, which a configuration should not pin.
func capturedSource(src string) bool {
	return strings.HasPrefix(src, "the live host") || strings.HasPrefix(src, "snapshot ")
}

// safeName: NixOS writes interface names into shell scripts and systemd
// unit names, quoted with "..." at best; names outside this set are left
// out rather than risk a broken or surprising script.
var safeName = regexp.MustCompile(`^[A-Za-z0-9_.+@-]{1,15}$`)

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (g *netGen) note(lines ...string) { g.trailing = append(g.trailing, lines...) }

// ifData is what networking.interfaces.NAME gets, written in a fixed
// order by set.
type ifData struct {
	addrs, routes [2][]any // [0] IPv4, [1] IPv6
	mtu           *int
	mac           string
}

func (d *ifData) set() *Set {
	s := &Set{}
	for i, fam := range []string{"ipv4", "ipv6"} {
		if len(d.addrs[i]) > 0 {
			s.Add(fam+".addresses", d.addrs[i])
		}
	}
	for i, fam := range []string{"ipv4", "ipv6"} {
		if len(d.routes[i]) > 0 {
			s.Add(fam+".routes", d.routes[i])
		}
	}
	if d.mtu != nil {
		s.Add("mtu", *d.mtu)
	}
	if d.mac != "" {
		s.Add("macAddress", d.mac)
	}
	return s
}

// iface returns the networking.interfaces.NAME data, creating it.
func (g *netGen) iface(name string) *ifData {
	if g.ifs == nil {
		g.ifs, g.ifNotes = map[string]*ifData{}, map[string][]string{}
	}
	d := g.ifs[name]
	if d == nil {
		d = &ifData{}
		g.ifs[name] = d
	}
	return d
}

func (g *netGen) own(name string) {
	if g.ours == nil {
		g.ours = map[string]bool{}
	}
	g.ours[name] = true
}

// missing says, for each network plugin absent from the state, that what
// it would describe is not in network.nix.
func (g *netGen) missing(plugins map[string]any) {
	why := func(name string) string {
		if e, ok := g.in.Errors[name]; ok {
			return "not captured: the " + name + " plugin could not be read (" + oneLine(e) + ")"
		}
		return "the state has no " + name + " part"
	}
	var lines []string
	if !g.hasNet {
		g.r.left("network links, addresses and routes", why("network")+"; add networking.interfaces, networking.bridges and routes by hand")
		lines = append(lines, "links, addresses, routes (network plugin)")
	}
	if !g.hasNM {
		g.r.left("NetworkManager profiles", why("networkmanager"))
		lines = append(lines, "NetworkManager profiles (networkmanager plugin)")
	}
	if !g.hasOVS {
		g.r.left("Open vSwitch bridges", why("ovs")+"; add networking.vswitches by hand")
		lines = append(lines, "Open vSwitch bridges (ovs plugin)")
	}
	if _, ok := plugins["wireguard"]; !ok {
		lines = append(lines, "WireGuard (wireguard plugin)")
	}
	if len(lines) > 0 {
		g.note("Not in the state, so not configured here (see REPORT.md):")
		g.note(prefixed("  ", lines)...)
	}
}

// ---- NetworkManager -------------------------------------------------

// storeSafe: ensureProfiles turns each profile's attribute name into a
// file (and store path) name, which allows only these characters.
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

var storeUnsafe = regexp.MustCompile(`[^A-Za-z0-9+._?=-]`)

func (g *netGen) nmProfiles(st *networkmanager.State) {
	used := map[string]bool{}
	for _, key := range sortedKeys(st.Connections) {
		c := st.Connections[key]
		if c == nil {
			continue
		}
		if c.State == "absent" {
			g.r.left("networkmanager.connections."+key, "state absent: ensureProfiles only adds profiles; delete it by hand")
			continue
		}
		id := c.ID
		if id == "" {
			id = key
		}
		attr := storeUnsafe.ReplaceAllString(key, "-")
		if attr == "" || strings.HasPrefix(attr, ".") {
			attr = "profile" + attr
		}
		for base, i := attr, 2; used[attr]; i++ {
			attr = base + "-" + strconv.Itoa(i)
		}
		used[attr] = true

		conn := &Set{}
		conn.Add("id", id)
		switch {
		case c.UUID != "":
			conn.Add("uuid", c.UUID)
		case c.ID != "" && uuidRE.MatchString(key):
			// Several profiles share the id; query keyed each by its UUID.
			conn.Add("uuid", key)
		}
		if c.Type != "" {
			conn.Add("type", c.Type)
		}
		if c.InterfaceName != nil && *c.InterfaceName != "" {
			conn.Add("interface-name", *c.InterfaceName)
			g.nmOwned[*c.InterfaceName] = key
		}
		for _, d := range c.Devices {
			if d != "" {
				g.nmOwned[d] = key
			}
		}
		if c.Autoconnect != nil {
			conn.Add("autoconnect", *c.Autoconnect)
		}
		if c.Controller != nil && *c.Controller != "" {
			conn.Add("master", *c.Controller)
		}
		if c.PortType != nil && *c.PortType != "" {
			conn.Add("slave-type", *c.PortType)
		}
		prof := &Set{}
		prof.Entries = append(prof.Entries, Entry{Path: []string{"connection"}, Value: conn})
		if c.MTU != nil && *c.MTU > 0 {
			prof.Entries = append(prof.Entries, Entry{Path: []string{"ethernet"}, Value: map[string]any{"mtu": int(*c.MTU)}})
		}
		if c.Bridge != nil && c.Bridge.STP != nil {
			prof.Entries = append(prof.Entries, Entry{Path: []string{"bridge"}, Value: map[string]any{"stp": *c.Bridge.STP}})
		}
		if c.Veth != nil && c.Veth.Peer != nil && *c.Veth.Peer != "" {
			prof.Entries = append(prof.Entries, Entry{Path: []string{"veth"}, Value: map[string]any{"peer": *c.Veth.Peer}})
		}
		for _, fam := range []struct {
			name string
			ip   *networkmanager.IP
		}{{"ipv4", c.IPv4}, {"ipv6", c.IPv6}} {
			if s := nmIP(fam.ip); s != nil {
				prof.Entries = append(prof.Entries, Entry{Path: []string{fam.name}, Value: s})
			}
		}
		var comment []string
		if attr != key {
			comment = append(comment, "Profile "+strconv.Quote(key)+" (the attribute name must be a file name).")
		}
		if c.Active != nil {
			g.r.left("networkmanager.connections."+key+".active", "no keyfile setting; NetworkManager activates a profile with autoconnect = true")
		}
		g.profiles = append(g.profiles, Entry{Path: []string{"networking", "networkmanager", "ensureProfiles", "profiles", attr}, Value: prof, Comment: comment})
		g.r.mapped("networkmanager.connections."+key, "networking.networkmanager.ensureProfiles.profiles."+AttrName(attr)+" (in network.nix)")
	}
	if len(g.profiles) > 0 {
		g.profiles[0].Comment = append([]string{
			"NetworkManager profiles in keyfile form. Secrets (Wi-Fi PSKs, 802.1X, VPN) are never",
			"read by op-dbus; give them with networking.networkmanager.ensureProfiles.environmentFiles.",
			"Settings op-dbus does not capture (routes, Wi-Fi, VLAN ids, bond options) are not here.",
		}, g.profiles[0].Comment...)
		g.r.left("NetworkManager profile settings other than id, uuid, type, interface-name, autoconnect, master, slave-type, mtu, bridge.stp, veth.peer, ipv4/ipv6 method, addresses, gateway, dns",
			"the networkmanager plugin does not capture them, nor any secret")
	}
}

// nmIP is an ipv4/ipv6 keyfile section: method, address1.., gateway, dns.
func nmIP(ip *networkmanager.IP) *Set {
	if ip == nil {
		return nil
	}
	s := &Set{}
	if ip.Method != "" {
		s.Add("method", ip.Method)
	}
	for i, a := range ip.Addresses {
		s.Entries = append(s.Entries, Entry{Path: []string{"address" + strconv.Itoa(i+1)}, Value: a})
	}
	if ip.Gateway != nil && *ip.Gateway != "" {
		s.Add("gateway", *ip.Gateway)
	}
	if len(ip.DNS) > 0 {
		s.Add("dns", strings.Join(ip.DNS, ";")+";")
	}
	if len(s.Entries) == 0 {
		return nil
	}
	return s
}

// ---- links ----------------------------------------------------------

// kindDefaultMTU is the MTU a new link of a kind gets; a captured MTU equal
// to it is not written.
var kindDefaultMTU = map[string]int{
	network.TypeLoopback: 65536, network.TypeEthernet: 1500, network.TypeBridge: 1500, network.TypeVeth: 1500,
	network.TypeDummy: 1500, network.TypeBond: 1500, network.TypeVLAN: 1500, network.TypeVXLAN: 1450,
	"openvswitch": 1500, "wireguard": 1420,
}

// hardwareMAC kinds carry the MAC of the device; every other kind gets a
// MAC from the kernel (random, or a port's) that a query reports but a
// configuration should not pin.
var hardwareMAC = map[string]bool{network.TypeEthernet: true}

func (g *netGen) links(ns *network.State) {
	byName := map[string]*network.Interface{}
	for _, ifc := range ns.Interfaces {
		if ifc != nil && ifc.State != network.StateAbsent {
			byName[ifc.Name] = ifc
		}
	}
	kind := func(n string) string {
		if ifc := byName[n]; ifc != nil {
			if ifc.Type == "" && ifc.Bridge != nil {
				return network.TypeBridge
			}
			return ifc.Type
		}
		return ""
	}
	// Ports by controller: the ports' controller fields and a bridge's
	// bridge.port list (documents).
	ports := map[string]map[string]bool{}
	addPort := func(ctrl, port string) {
		if ports[ctrl] == nil {
			ports[ctrl] = map[string]bool{}
		}
		ports[ctrl][port] = true
	}
	for _, ifc := range ns.Interfaces {
		if ifc == nil || ifc.State == network.StateAbsent {
			continue
		}
		if ifc.Controller != nil && *ifc.Controller != "" {
			addPort(*ifc.Controller, ifc.Name)
		}
		if ifc.Bridge != nil {
			for _, p := range ifc.Bridge.Port {
				addPort(ifc.Name, p.Name)
			}
		}
	}
	var veths, vxlans, others []string
	seenVeth := map[string]bool{}
	for _, ifc := range ns.Interfaces {
		if ifc == nil {
			continue
		}
		name := ifc.Name
		what := "network.interfaces " + name
		if ifc.State == network.StateAbsent {
			g.r.left(what, "state absent: NixOS creates only what it names; nothing to write")
			continue
		}
		if name == "ovs-system" && (ifc.Type == "openvswitch" || ifc.Type == "") {
			g.r.left(what, "Open vSwitch's datapath device, made by ovs-vswitchd")
			continue
		}
		if !safeName.MatchString(name) {
			g.r.left(what, "the name has characters NixOS's network scripts do not quote; configure it by hand")
			continue
		}
		if p, ok := g.nmOwned[name]; ok {
			g.r.left(what, "NetworkManager profile "+strconv.Quote(p)+" describes it; the profile wins (NixOS networking.* and NetworkManager would fight over the link)")
			continue
		}
		t := kind(name)
		var mapped []string
		switch t {
		case network.TypeBridge:
			list := g.ports(what, ports[name])
			g.bridges = append(g.bridges, Entry{Path: []string{"networking", "bridges", name, "interfaces"}, Value: nonNil(list)})
			g.own(name)
			g.r.mapped(what+" (bridge, ports: "+orNone(list)+")", "networking.bridges."+AttrName(name)+".interfaces (in network.nix)")
		case network.TypeBond:
			bs := &Set{}
			list := g.ports(what, ports[name])
			bs.Add("interfaces", nonNil(list))
			if ifc.Bond != nil && ifc.Bond.Mode != "" {
				bs.Add("driverOptions", map[string]any{"mode": ifc.Bond.Mode})
			}
			g.bonds = append(g.bonds, Entry{Path: []string{"networking", "bonds", name}, Value: bs})
			g.own(name)
			g.r.mapped(what+" (bond, ports: "+orNone(list)+")", "networking.bonds."+AttrName(name)+" (in network.nix)")
		case network.TypeVLAN:
			if ifc.VLAN == nil || !safeName.MatchString(ifc.VLAN.BaseIface) {
				g.r.left(what+" (vlan)", "its base link and VLAN id are not in the state; add networking.vlans by hand")
				break
			}
			vs := &Set{}
			vs.Add("id", ifc.VLAN.ID)
			vs.Add("interface", ifc.VLAN.BaseIface)
			g.vlans = append(g.vlans, Entry{Path: []string{"networking", "vlans", name}, Value: vs})
			g.own(name)
			g.r.mapped(what+" (vlan "+strconv.Itoa(ifc.VLAN.ID)+" on "+ifc.VLAN.BaseIface+")", "networking.vlans."+AttrName(name)+" (in network.nix)")
		case network.TypeVeth:
			peer := ""
			if ifc.Veth != nil {
				peer = ifc.Veth.Peer
			}
			if !seenVeth[name] {
				seenVeth[name], seenVeth[peer] = true, true
				if a, b := name, peer; b != "" {
					if b < a {
						a, b = b, a
					}
					veths = append(veths, a+" <-> "+b)
				} else {
					veths = append(veths, name)
				}
			}
			g.r.left(what+" (veth)", "NixOS has no option that creates a veth pair (networking.interfaces, bridges and vswitches only use existing links); create it with systemd.network.netdevs or the container that owns it")
		case network.TypeVXLAN:
			vxlans = append(vxlans, vxlanLine(name, ifc.VXLAN))
			g.r.left(what+" (vxlan)", "no networking.* option creates a VXLAN link; use systemd.network.netdevs (Kind=vxlan) by hand")
		case network.TypeDummy:
			others = append(others, name+" (dummy)")
			g.r.left(what+" (dummy)", "no networking.* option creates a dummy link; use systemd.network.netdevs (Kind=dummy) by hand")
		case network.TypeLoopback, network.TypeEthernet, "wireguard", "openvswitch", "":
			// Devices that exist (hardware, lo) or that another part of
			// network.nix creates (networking.wireguard, networking.vswitches).
		default:
			others = append(others, name+" ("+t+")")
			g.r.left(what+" ("+t+")", "op-dbus does not create "+t+" links and maps no option for them; the program that made it must make it again")
		}
		if t == "openvswitch" && !g.hasOVS {
			g.r.left(what+" (openvswitch)", "the ovs plugin's state is missing, so no networking.vswitches creates it")
		}
		if c := ifc.Controller; c != nil && *c != "" && t != network.TypeBridge {
			ck := kind(*c)
			switch {
			case ck == network.TypeBridge || ck == network.TypeBond:
			case ck == "openvswitch" || *c == "ovs-system":
				// An Open vSwitch port: networking.vswitches says so.
			case byName[*c] == nil:
				g.r.left(what+" controller "+*c, "the controller is not in the state, so its kind (bridge or bond) is unknown; add it by hand")
			default:
				g.r.left(what+" controller "+*c, "a port of a "+ck+" link: no NixOS option for that")
			}
		}
		mapped = append(mapped, g.addresses(name, t, ifc)...)
		if ifc.MTU != nil && !(g.captured && kindDefaultMTU[t] == *ifc.MTU) {
			g.iface(name).mtu = ifc.MTU
			mapped = append(mapped, "mtu")
		}
		if ifc.MACAddress != "" {
			if !g.captured || hardwareMAC[t] {
				g.iface(name).mac = ifc.MACAddress
				mapped = append(mapped, "mac_address")
			} else {
				g.r.left(what+" mac_address", "a query reports the MAC the kernel gave this "+orKind(t)+" link (random or a port's); pinning it is not what was configured. Name it in a state document (--from) to map it")
			}
		}
		if ifc.State == network.StateDown && t != network.TypeLoopback {
			g.r.left(what+" state down", "NixOS has no option to keep a link down; networking.* brings configured links up")
		}
		if len(mapped) > 0 {
			g.own(name)
			g.r.mapped(what+" ("+strings.Join(mapped, ", ")+")", "networking.interfaces."+AttrName(name)+" (in network.nix)")
			if note := createdElsewhere(t); note != "" {
				g.ifNotes[name] = []string{name + " is a " + t + " link: " + note}
			}
		}
	}
	sort.Strings(veths)
	sort.Strings(vxlans)
	sort.Strings(others)
	if len(veths) > 0 {
		g.note("veth pairs, not created by this configuration (NixOS has no veth option):")
		g.note(prefixed("  ", veths)...)
	}
	if len(vxlans) > 0 {
		g.note("VXLAN links, not created by this configuration (use systemd.network.netdevs):")
		g.note(prefixed("  ", vxlans)...)
	}
	if len(others) > 0 {
		g.note("Other links this configuration does not create:")
		g.note(prefixed("  ", others)...)
	}
}

// ports lists a bridge's or bond's ports for networking.*, sorted, without
// those a NetworkManager profile attaches or whose names are unsafe.
func (g *netGen) ports(what string, set map[string]bool) []string {
	var list []string
	for _, p := range sortedSet(set) {
		switch {
		case g.nmOwned[p] != "":
			g.r.left(what+" port "+p, "NetworkManager profile "+strconv.Quote(g.nmOwned[p])+" makes it a port")
		case !safeName.MatchString(p):
			g.r.left(what+" port "+p, "the name has characters NixOS's network scripts do not quote")
		default:
			list = append(list, p)
			g.own(p)
		}
	}
	return list
}

func createdElsewhere(t string) string {
	switch t {
	case network.TypeVeth, network.TypeVXLAN, network.TypeDummy:
		return "NixOS does not create it (see the end of this file); these settings apply once it exists."
	case network.TypeLoopback, network.TypeEthernet, network.TypeBridge, network.TypeBond, network.TypeVLAN, "wireguard", "openvswitch", "":
		return ""
	}
	return "not created by this configuration; these settings apply once it exists."
}

func orKind(t string) string {
	if t == "" {
		return "virtual"
	}
	return t
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func vxlanLine(name string, v *network.VXLAN) string {
	if v == nil {
		return name
	}
	parts := []string{name, "id " + strconv.Itoa(v.ID)}
	if v.Remote != "" {
		parts = append(parts, "remote "+v.Remote)
	}
	if v.Local != "" {
		parts = append(parts, "local "+v.Local)
	}
	if v.DestinationPort != 0 {
		parts = append(parts, "dstport "+strconv.Itoa(v.DestinationPort))
	}
	if v.BaseIface != "" {
		parts = append(parts, "dev "+v.BaseIface)
	}
	return strings.Join(parts, " ")
}

// addresses maps both address lists; the loopback's own 127.0.0.1/8 and
// ::1/128 are NixOS's, not written.
func (g *netGen) addresses(name, t string, ifc *network.Interface) []string {
	var mapped []string
	for fi, fam := range []struct {
		name string
		c    *network.IPConfig
	}{{"ipv4", ifc.IPv4}, {"ipv6", ifc.IPv6}} {
		if fam.c == nil {
			continue
		}
		var list []any
		for _, a := range fam.c.Address {
			if (t == network.TypeLoopback || name == "lo") && (a.CIDR() == "127.0.0.1/8" || a.CIDR() == "::1/128") {
				continue
			}
			list = append(list, map[string]any{"address": a.IP, "prefixLength": a.PrefixLength})
		}
		if len(list) > 0 {
			g.iface(name).addrs[fi] = list
			mapped = append(mapped, fam.name+" addresses")
		}
	}
	return mapped
}

// ---- routes ---------------------------------------------------------

func wireguardRoutes(ws *wireguard.State) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name, ifc := range ws.Interfaces {
		if ifc == nil {
			continue
		}
		for _, p := range ifc.Peers {
			if p == nil || p.State == "absent" {
				continue
			}
			for _, a := range p.AllowedIPs {
				if pf, err := netip.ParsePrefix(a); err == nil {
					if out[name] == nil {
						out[name] = map[string]bool{}
					}
					out[name][pf.Masked().String()] = true
				}
			}
		}
	}
	return out
}

func (g *netGen) routes(ns *network.State) {
	if ns.Routes == nil {
		return
	}
	// subnets of each link's addresses, to find the link of a route that
	// names only a gateway.
	type subnet struct {
		pf   netip.Prefix
		name string
	}
	var subnets []subnet
	for _, ifc := range ns.Interfaces {
		if ifc == nil || ifc.State == network.StateAbsent {
			continue
		}
		for _, c := range []*network.IPConfig{ifc.IPv4, ifc.IPv6} {
			if c == nil {
				continue
			}
			for _, a := range c.Address {
				if pf, err := netip.ParsePrefix(a.CIDR()); err == nil {
					subnets = append(subnets, subnet{pf.Masked(), ifc.Name})
				}
			}
		}
	}
	gw := map[bool]bool{} // family (v6) → defaultGateway taken
	for i, rt := range ns.Routes.Config {
		if rt == nil {
			continue
		}
		what := fmt.Sprintf("network.routes.config[%d] %s", i, rt.Destination)
		if rt.State == network.StateAbsent {
			g.r.left(what, "state absent: NixOS adds only the routes it names; nothing to write")
			continue
		}
		dst, err := netip.ParsePrefix(rt.Destination)
		if err != nil {
			g.r.left(what, "not a CIDR destination")
			continue
		}
		v6 := dst.Addr().Is6()
		switch rt.RouteType {
		case "", network.RouteUnicast:
		default:
			g.r.left(what+" ("+rt.RouteType+")", "NixOS's per-interface routes cannot be "+rt.RouteType+" routes; add it with networking.localCommands or systemd.network by hand")
			continue
		}
		dev := rt.NextHopInterface
		if dev == "" && rt.NextHopAddress != "" {
			if a, err := netip.ParseAddr(rt.NextHopAddress); err == nil {
				for _, s := range subnets {
					if s.pf.Contains(a) {
						dev = s.name
						break
					}
				}
			}
		}
		table := rt.TableID
		if table == 0 {
			table = network.MainTable
		}
		metric, defMetric := 0, 0
		if v6 {
			defMetric = 1024
		}
		if rt.Metric != nil {
			metric = *rt.Metric
		} else {
			metric = defMetric
		}
		if dev != "" {
			if p, ok := g.nmOwned[dev]; ok {
				g.r.left(what+" dev "+dev, "NetworkManager profile "+strconv.Quote(p)+" owns the link; its routes belong in that profile")
				continue
			}
			if g.wgRoutes[dev][dst.String()] {
				g.r.left(what+" dev "+dev, "networking.wireguard.interfaces."+dev+" adds it (allowedIPsAsRoutes)")
				continue
			}
			if !safeName.MatchString(dev) {
				g.r.left(what, "the link name has characters NixOS's network scripts do not quote")
				continue
			}
		}
		// The first default route of a family in the main table with a
		// gateway becomes networking.defaultGateway(6).
		if dst.Bits() == 0 && table == network.MainTable && rt.NextHopAddress != "" && !gw[v6] {
			gw[v6] = true
			s := &Set{}
			s.Add("address", rt.NextHopAddress)
			if dev != "" {
				s.Add("interface", dev)
			}
			if metric != defMetric {
				s.Add("metric", metric)
			}
			if rt.Source != "" {
				s.Add("source", rt.Source)
			}
			opt := "networking.defaultGateway"
			if v6 {
				opt += "6"
			}
			g.gateways = append(g.gateways, Entry{Path: optPath(opt), Value: s})
			g.r.mapped(what+" via "+rt.NextHopAddress, opt+" (in network.nix)")
			continue
		}
		if dev == "" {
			g.r.left(what, "no outgoing link, and the gateway is in no subnet of the state's addresses; NixOS routes belong to a link")
			continue
		}
		rs := &Set{}
		rs.Add("address", dst.Addr().String())
		rs.Add("prefixLength", dst.Bits())
		if rt.NextHopAddress != "" {
			rs.Add("via", rt.NextHopAddress)
		}
		opts := map[string]any{}
		if metric != defMetric {
			opts["metric"] = strconv.Itoa(metric)
		}
		if table != network.MainTable {
			opts["table"] = strconv.Itoa(table)
		}
		if rt.Source != "" {
			opts["src"] = rt.Source
		}
		if len(opts) > 0 {
			rs.Add("options", opts)
		}
		fam, fi := "ipv4", 0
		if v6 {
			fam, fi = "ipv6", 1
		}
		d := g.iface(dev)
		d.routes[fi] = append(d.routes[fi], rs)
		g.own(dev)
		g.r.mapped(what+" dev "+dev, "networking.interfaces."+AttrName(dev)+"."+fam+".routes (in network.nix)")
	}
}

// ---- Open vSwitch ---------------------------------------------------

// ovsDevice types are the interfaces networking.vswitches.NAME.interfaces
// can hold: NixOS waits for every non-internal one to exist as a device
// before it configures the switch. Others (patch, tunnels, tap) are added
// with ovs-vsctl commands in extraOvsctlCmds.
func ovsDevice(t string) bool { return t == "" || t == "system" || t == "internal" }

var ovsBare = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ovsAtom writes a string for ovs-vsctl's value syntax: bare when plain,
// otherwise a double-quoted JSON string.
func ovsAtom(s string) string {
	if ovsBare.MatchString(s) {
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

var shBare = regexp.MustCompile(`^[A-Za-z0-9_.,:=/@%+-]+$`)

// shWord quotes s for the shell NixOS pastes extraOvsctlCmds into.
func shWord(s string) string {
	if shBare.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func ovsLine(args ...string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shWord(a)
	}
	return strings.Join(out, " ")
}

// mapCmds are `set TABLE NAME column:key=value` per key, sorted.
func mapCmds(table, name, column string, m map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, ovsLine("set", table, name, column+":"+ovsAtom(k)+"="+ovsAtom(m[k])))
	}
	return out
}

func (g *netGen) vswitches(st *ovs.State) {
	for _, bn := range sortedKeys(st.Bridges) {
		b := st.Bridges[bn]
		what := "ovs.bridges." + bn
		if b == nil {
			continue
		}
		if b.State == "absent" {
			g.r.left(what, "state absent: NixOS creates only the switches it names")
			continue
		}
		if !safeName.MatchString(bn) {
			g.r.left(what, "the name has characters NixOS's vswitch script does not quote")
			continue
		}
		var cmds []string
		var mapped []string
		if b.FailMode == "secure" {
			cmds = append(cmds, ovsLine("set-fail-mode", bn, "secure"))
			mapped = append(mapped, "fail_mode")
		}
		if b.DatapathType != "" && b.DatapathType != "system" {
			cmds = append(cmds, ovsLine("set", "Bridge", bn, "datapath_type="+ovsAtom(b.DatapathType)))
			mapped = append(mapped, "datapath_type")
		}
		if len(b.ExternalIDs) > 0 {
			cmds = append(cmds, mapCmds("Bridge", bn, "external_ids", b.ExternalIDs)...)
			mapped = append(mapped, "external_ids")
		}
		if len(b.OtherConfig) > 0 {
			cmds = append(cmds, mapCmds("Bridge", bn, "other_config", b.OtherConfig)...)
			mapped = append(mapped, "other_config")
		}
		ifaces := &Set{}
		var portNames []string
		for _, pn := range sortedKeys(b.Ports) {
			p := b.Ports[pn]
			pw := what + ".ports." + pn
			if p == nil {
				p = &ovs.Port{}
			}
			if p.State == "absent" {
				g.r.left(pw, "state absent: the switch is created afresh with only the ports named")
				continue
			}
			if !safeName.MatchString(pn) {
				g.r.left(pw, "the name has characters NixOS's vswitch script does not quote")
				continue
			}
			var live []string
			for _, in := range sortedKeys(p.Interfaces) {
				if i := p.Interfaces[in]; i == nil || i.State != "absent" {
					live = append(live, in)
				}
			}
			if len(live) == 0 {
				live = []string{pn} // add-port makes an interface of the port's name
			}
			if len(live) > 1 || live[0] != pn {
				g.r.left(pw, "a port whose interfaces ("+strings.Join(live, ", ")+") are not one of its own name (a bond): networking.vswitches adds one interface per port; add it with ovs-vsctl add-bond by hand")
				continue
			}
			iface := p.Interfaces[pn]
			if iface == nil {
				iface = &ovs.Interface{}
			}
			tag, _, _ := ovsOptInt(p.Tag)
			own := pn == bn
			var portCmds []string
			switch {
			case own:
				// add-br makes the bridge's own internal port.
				if tag != nil {
					portCmds = append(portCmds, ovsLine("set", "Port", pn, "tag="+strconv.Itoa(*tag)))
				}
			case ovsDevice(iface.Type):
				e := &Set{}
				e.Add("name", pn)
				if tag != nil {
					e.Add("vlan", *tag)
				}
				if iface.Type == "internal" {
					e.Add("type", "internal")
				}
				ifaces.Entries = append(ifaces.Entries, Entry{Path: []string{pn}, Value: e})
			default:
				if !ovsBare.MatchString(iface.Type) {
					g.r.left(pw, "interface type "+strconv.Quote(iface.Type)+" is not a plain word")
					continue
				}
				add := []string{"add-port", bn, pn}
				if tag != nil {
					add = append(add, "tag="+strconv.Itoa(*tag))
				}
				portCmds = append(portCmds, ovsLine(add...), ovsLine("set", "Interface", pn, "type="+iface.Type))
			}
			if len(p.Trunks) > 0 {
				ts := make([]string, len(p.Trunks))
				for i, v := range p.Trunks {
					ts[i] = strconv.Itoa(v)
				}
				portCmds = append(portCmds, ovsLine("set", "Port", pn, "trunks="+strings.Join(ts, ",")))
			}
			portCmds = append(portCmds, mapCmds("Port", pn, "external_ids", p.ExternalIDs)...)
			portCmds = append(portCmds, mapCmds("Interface", pn, "options", iface.Options)...)
			if mtu, _, _ := ovsOptInt(iface.MTURequest); mtu != nil {
				portCmds = append(portCmds, ovsLine("set", "Interface", pn, "mtu_request="+strconv.Itoa(*mtu)))
			}
			portCmds = append(portCmds, mapCmds("Interface", pn, "external_ids", iface.ExternalIDs)...)
			cmds = append(cmds, portCmds...)
			if !own {
				portNames = append(portNames, pn)
			}
		}
		s := &Set{}
		s.Add("interfaces", ifaces)
		if len(cmds) > 0 {
			// One ovs-vsctl command per line, as a list so each reads on
			// its own (depth 2: inside networking.vswitches.NAME).
			s.Add("extraOvsctlCmds", linesExpr(cmds, 2))
		}
		g.switches = append(g.switches, Entry{Path: []string{"networking", "vswitches", bn}, Value: s})
		desc := "ports: " + orNone(portNames)
		if len(mapped) > 0 {
			desc += "; " + strings.Join(mapped, ", ") + " in extraOvsctlCmds"
		}
		g.r.mapped(what+" ("+desc+")", "networking.vswitches."+AttrName(bn)+" (in network.nix)")
	}
	if len(g.switches) > 0 {
		g.switches[0].Comment = []string{
			"Open vSwitch bridges. NixOS re-creates each switch at boot (del-br, add-br) with the",
			"ports named here; its own internal port comes with add-br. Patch and tunnel ports,",
			"and settings without a NixOS option, are ovs-vsctl commands in extraOvsctlCmds.",
		}
		g.r.left("Open vSwitch flows, controllers, QoS, mirrors, port vlan_mode, bonds", "the ovs plugin does not capture them")
	}
}

// linesExpr is the lines joined by newlines, written as
// builtins.concatStringsSep "\n" [ ... ] for a binding at depth (the
// module's top level is depth 1). No line may hold a newline: each is one
// command NixOS pastes after " -- ".
func linesExpr(lines []string, depth int) Raw {
	var b strings.Builder
	b.WriteString(`builtins.concatStringsSep "\n" [` + "\n")
	for _, l := range lines {
		b.WriteString(strings.Repeat("  ", depth+1) + String(l) + "\n")
	}
	b.WriteString(strings.Repeat("  ", depth) + "]")
	return Raw(b.String())
}

// ovsOptInt reads a nullable integer (tag, mtu_request); nil for null or
// left out.
func ovsOptInt(raw json.RawMessage) (*int, bool, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, len(t) > 0, nil
	}
	n, err := strconv.Atoi(string(t))
	if err != nil {
		return nil, true, err
	}
	return &n, true, nil
}
