package nixos

// The network plugin's routes: networking.defaultGateway(6) and
// networking.interfaces.NAME.ipv4/ipv6.routes.

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/op-dbus/op-dbus/internal/plugins/network"
)

// routes maps the network plugin's routes: the first default route of a
// family with a gateway to networking.defaultGateway(6), the rest to the
// routes of their link.
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
