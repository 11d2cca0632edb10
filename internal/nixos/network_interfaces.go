package nixos

// networking.interfaces.NAME: the per-link data (addresses, routes, MTU,
// MAC) network.nix writes, and the addresses of the network plugin's links.

import (
	"github.com/op-dbus/op-dbus/internal/plugins/network"
)

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
