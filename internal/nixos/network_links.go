package nixos

// The network plugin's links: which become networking.* (bridges, bonds,
// VLANs, interfaces), and which NixOS cannot create (veth, VXLAN, dummy...).

import (
	"sort"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugins/network"
)

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

// links maps each link of the network plugin's state by kind, with its
// addresses, MTU and MAC, and notes the links NixOS will not create.
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
			g.bridge(what, name, ports[name])
		case network.TypeBond:
			g.bond(what, ifc, ports[name])
		case network.TypeVLAN:
			g.vlan(what, ifc)
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
