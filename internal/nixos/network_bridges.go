package nixos

// Bridges, bonds and VLANs: networking.bridges, networking.bonds,
// networking.vlans, and the ports they hold.

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugins/network"
)

// bridge maps a Linux bridge to networking.bridges.NAME.interfaces.
func (g *netGen) bridge(what, name string, ports map[string]bool) {
	list := g.ports(what, ports)
	g.bridges = append(g.bridges, Entry{Path: []string{"networking", "bridges", name, "interfaces"}, Value: nonNil(list)})
	g.own(name)
	g.r.mapped(what+" (bridge, ports: "+orNone(list)+")", "networking.bridges."+AttrName(name)+".interfaces (in network.nix)")
}

// bond maps a bond to networking.bonds.NAME: its ports and mode.
func (g *netGen) bond(what string, ifc *network.Interface, ports map[string]bool) {
	name := ifc.Name
	bs := &Set{}
	list := g.ports(what, ports)
	bs.Add("interfaces", nonNil(list))
	if ifc.Bond != nil && ifc.Bond.Mode != "" {
		bs.Add("driverOptions", map[string]any{"mode": ifc.Bond.Mode})
	}
	g.bonds = append(g.bonds, Entry{Path: []string{"networking", "bonds", name}, Value: bs})
	g.own(name)
	g.r.mapped(what+" (bond, ports: "+orNone(list)+")", "networking.bonds."+AttrName(name)+" (in network.nix)")
}

// vlan maps a VLAN link to networking.vlans.NAME (id and base link), or
// reports it left out when the state lacks either.
func (g *netGen) vlan(what string, ifc *network.Interface) {
	name := ifc.Name
	if ifc.VLAN == nil || !safeName.MatchString(ifc.VLAN.BaseIface) {
		g.r.left(what+" (vlan)", "its base link and VLAN id are not in the state; add networking.vlans by hand")
		return
	}
	vs := &Set{}
	vs.Add("id", ifc.VLAN.ID)
	vs.Add("interface", ifc.VLAN.BaseIface)
	g.vlans = append(g.vlans, Entry{Path: []string{"networking", "vlans", name}, Value: vs})
	g.own(name)
	g.r.mapped(what+" (vlan "+strconv.Itoa(ifc.VLAN.ID)+" on "+ifc.VLAN.BaseIface+")", "networking.vlans."+AttrName(name)+" (in network.nix)")
}

// ports lists a bridge's or bond's ports for networking.*, sorted, without
// those a NetworkManager profile attaches or whose names are unsafe.
func (g *netGen) ports(what string, set map[string]bool) []string {
	var list []string
	for _, p := range slices.Sorted(maps.Keys(set)) {
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
