package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/op-dbus/op-dbus/internal/state"
)

// ValidName follows the kernel's dev_valid_name: 1 to 15 bytes, not "." or
// "..", no '/', ':' or whitespace.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty interface name")
	case len(name) > 15:
		return fmt.Errorf("interface name %q is %d bytes; the kernel allows at most 15", name, len(name))
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		switch {
		case r == '/':
			return fmt.Errorf("interface name %q contains '/'", name)
		case r == ':':
			return fmt.Errorf("interface name %q contains ':' (alias labels are not links)", name)
		case r <= ' ' || r == 0x7f:
			return fmt.Errorf("interface name %q contains whitespace or a control character", name)
		}
	}
	return nil
}

// parseCIDR parses a route destination and insists on a network address.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q (want network/prefix, e.g. 10.0.0.0/24 or 0.0.0.0/0)", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: zones are not allowed", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		if strings.Contains(s, "/") {
			return netip.Addr{}, fmt.Errorf("invalid IP %q: give the address without /prefix (the prefix goes in prefix_length)", s)
		}
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	}
	return a.Unmap(), nil
}

// Validate implements plugin.Validator: every static problem of the
// document, each with its path below "network".
func (p *Plugin) Validate(st any) state.Problems {
	s, _ := st.(*State)
	if s == nil {
		return nil
	}
	return validate(s)
}

// validate checks the document concern by concern, in this order: the
// interface names, the bridges' port lists, each interface, the routes,
// the probes.
func validate(s *State) state.Problems {
	v := &validator{byName: map[string]*Interface{}}
	v.names(s.Interfaces)
	v.bridgePorts(s.Interfaces)
	for i, ifc := range s.Interfaces {
		if ifc != nil {
			v.link(fmt.Sprintf("interfaces[%d]", i), ifc)
		}
	}
	if s.Routes != nil {
		v.routes(s.Routes.Config)
	}
	v.probes(s.Probes)
	return v.ps
}

// validator collects the problems of one document.
type validator struct {
	ps state.Problems
	// byName: the interfaces with a valid name, each listed once.
	byName map[string]*Interface
}

func (v *validator) add(path, format string, a ...any) {
	v.ps = append(v.ps, state.Problem{Path: path, Msg: fmt.Sprintf(format, a...)})
}

// names checks each interface's name and that none is listed twice, and
// fills byName.
func (v *validator) names(ifcs []*Interface) {
	firstAt := map[string]int{}
	for i, ifc := range ifcs {
		path := fmt.Sprintf("interfaces[%d]", i)
		if ifc == nil {
			v.add(path, "empty interface entry")
			continue
		}
		if err := ValidName(ifc.Name); err != nil {
			v.add(path+".name", "%v", err)
		} else if j, dup := firstAt[ifc.Name]; dup {
			v.add(path+".name", "interface %q is listed twice (also interfaces[%d]); list each interface once", ifc.Name, j)
		} else {
			firstAt[ifc.Name] = i
			v.byName[ifc.Name] = ifc
		}
	}
}

// bridgePorts checks the bridges' bridge.port lists: each port a valid
// name, not the bridge itself, claimed by one bridge only, agreeing with
// the port's own controller, and not removed.
func (v *validator) bridgePorts(ifcs []*Interface) {
	portOf := map[string]string{} // port → the bridge that claims it
	for i, ifc := range ifcs {
		if ifc == nil || ifc.Bridge == nil {
			continue
		}
		path := fmt.Sprintf("interfaces[%d].bridge", i)
		if ifc.Type != "" && ifc.Type != TypeBridge {
			v.add(path, "bridge settings on an interface of type %q", ifc.Type)
		}
		for j, port := range ifc.Bridge.Port {
			pp := fmt.Sprintf("%s.port[%d].name", path, j)
			if err := ValidName(port.Name); err != nil {
				v.add(pp, "%v", err)
				continue
			}
			if port.Name == ifc.Name {
				v.add(pp, "bridge %q cannot be a port of itself", ifc.Name)
				continue
			}
			if other, ok := portOf[port.Name]; ok && other != ifc.Name {
				v.add(pp, "%q is already a port of bridge %q; a link can be a port of one bridge only", port.Name, other)
				continue
			}
			portOf[port.Name] = ifc.Name
			if pi := v.byName[port.Name]; pi != nil && pi.Controller != nil && *pi.Controller != ifc.Name {
				v.add(pp, "%q is listed as a port of %q but its controller is %q; a link can be a port of one bridge only", port.Name, ifc.Name, *pi.Controller)
			}
			if pi := v.byName[port.Name]; pi != nil && pi.State == StateAbsent {
				v.add(pp, "port %q is removed by this document (state: absent)", port.Name)
			}
		}
	}
}

// link checks one interface: state, type, MTU, MAC, controller, addresses
// and the settings of its kind.
func (v *validator) link(path string, ifc *Interface) {
	switch ifc.State {
	case "", StateUp, StateDown, StateAbsent:
	default:
		v.add(path+".state", "must be \"up\", \"down\" or \"absent\", got %q", ifc.State)
	}
	if ifc.Type != "" {
		if err := validType(ifc.Type); err != nil {
			v.add(path+".type", "%v", err)
		}
	}
	if ifc.State == StateAbsent {
		if ifc.Type == TypeLoopback || ifc.Name == "lo" {
			v.add(path+".state", "the loopback interface cannot be removed")
		}
		return
	}
	if ifc.MTU != nil && (*ifc.MTU < 68 || *ifc.MTU > 65535) {
		// The loopback's own default MTU is 65536.
		if !(*ifc.MTU == 65536 && (ifc.Type == TypeLoopback || ifc.Name == "lo")) {
			v.add(path+".mtu", "mtu %d is out of range 68..65535", *ifc.MTU)
		}
	}
	if ifc.MACAddress != "" {
		if hw, err := net.ParseMAC(ifc.MACAddress); err != nil || len(hw) != 6 {
			v.add(path+".mac_address", "invalid MAC address %q (want six hex bytes, aa:bb:cc:dd:ee:ff)", ifc.MACAddress)
		}
	}
	v.controller(path, ifc)
	validIPs(&v.ps, path+".ipv4", ifc.IPv4, false)
	validIPs(&v.ps, path+".ipv6", ifc.IPv6, true)
	v.kindSettings(path, ifc)
}

// controller checks that a port's controller is a valid name, not the
// port itself, not removed, and a bridge or bond.
func (v *validator) controller(path string, ifc *Interface) {
	c := ifc.Controller
	if c == nil || *c == "" {
		return
	}
	switch err := ValidName(*c); {
	case err != nil:
		v.add(path+".controller", "%v", err)
	case *c == ifc.Name:
		v.add(path+".controller", "%q cannot be a port of itself", ifc.Name)
	default:
		if ci := v.byName[*c]; ci != nil {
			if ci.State == StateAbsent {
				v.add(path+".controller", "controller %q is removed by this document (state: absent)", *c)
			} else if ci.Type != "" && ci.Type != TypeBridge && ci.Type != TypeBond {
				v.add(path+".controller", "controller %q is of type %q; only a bridge or bond can have ports", *c, ci.Type)
			}
		}
	}
}

// kindSettings checks that a kind's section (veth, vxlan, vlan, bond)
// appears only on an interface of that type, then the section itself.
func (v *validator) kindSettings(path string, ifc *Interface) {
	sections := map[string]bool{TypeVeth: ifc.Veth != nil, TypeVXLAN: ifc.VXLAN != nil, TypeVLAN: ifc.VLAN != nil, TypeBond: ifc.Bond != nil}
	for kind, has := range sections {
		if has && ifc.Type != kind {
			v.add(path+"."+kind, "%s settings need type %q, got type %q", kind, kind, ifc.Type)
		}
	}
	switch ifc.Type {
	case TypeVeth:
		v.veth(path, ifc)
	case TypeVXLAN:
		v.vxlan(path, ifc.VXLAN)
	case TypeVLAN:
		v.vlan(path, ifc.VLAN)
	case TypeBond:
		if ifc.Bond != nil && ifc.Bond.Mode != "" && bondMode(ifc.Bond.Mode) < 0 {
			v.add(path+".bond.mode", "unknown bond mode %q", ifc.Bond.Mode)
		}
	}
}

// veth checks a veth's peer: named, valid, not itself, and, when the
// document lists the peer, a veth that names this end back.
func (v *validator) veth(path string, ifc *Interface) {
	switch {
	case ifc.Veth == nil || ifc.Veth.Peer == "":
		v.add(path+".veth.peer", "a veth needs veth.peer, the name of its other end")
	case ValidName(ifc.Veth.Peer) != nil:
		v.add(path+".veth.peer", "%v", ValidName(ifc.Veth.Peer))
	case ifc.Veth.Peer == ifc.Name:
		v.add(path+".veth.peer", "a veth cannot be its own peer")
	default:
		if pi := v.byName[ifc.Veth.Peer]; pi != nil && pi.State != StateAbsent {
			if pi.Type != "" && pi.Type != TypeVeth {
				v.add(path+".veth.peer", "peer %q is listed with type %q", ifc.Veth.Peer, pi.Type)
			} else if pi.Veth != nil && pi.Veth.Peer != "" && pi.Veth.Peer != ifc.Name {
				v.add(path+".veth.peer", "peer %q names %q as its own peer, not %q", ifc.Veth.Peer, pi.Veth.Peer, ifc.Name)
			}
		}
	}
}

// vxlan checks a vxlan section: VNI, addresses, port and base link.
func (v *validator) vxlan(path string, x *VXLAN) {
	if x == nil {
		v.add(path+".vxlan", "a vxlan needs vxlan.id")
		return
	}
	if x.ID < 0 || x.ID > 1<<24-1 {
		v.add(path+".vxlan.id", "VNI %d is out of range 0..16777215", x.ID)
	}
	if x.Remote != "" {
		if _, err := parseIP(x.Remote); err != nil {
			v.add(path+".vxlan.remote", "%v", err)
		}
	}
	if x.Local != "" {
		if _, err := parseIP(x.Local); err != nil {
			v.add(path+".vxlan.local", "%v", err)
		}
	}
	if x.DestinationPort < 0 || x.DestinationPort > 65535 {
		v.add(path+".vxlan.destination_port", "port %d is out of range 0..65535", x.DestinationPort)
	}
	if x.BaseIface != "" {
		if err := ValidName(x.BaseIface); err != nil {
			v.add(path+".vxlan.base_iface", "%v", err)
		}
	}
}

// vlan checks a vlan section: base link and VLAN id.
func (v *validator) vlan(path string, l *VLAN) {
	if l == nil {
		v.add(path+".vlan", "a vlan needs vlan.base_iface and vlan.id")
		return
	}
	if err := ValidName(l.BaseIface); err != nil {
		v.add(path+".vlan.base_iface", "%v", err)
	}
	if l.ID < 1 || l.ID > 4094 {
		v.add(path+".vlan.id", "VLAN id %d is out of range 1..4094", l.ID)
	}
}

// routeIdentity identifies a route in the document for the duplicate check:
// destination, table and metric (the default metric of the family when
// left out), and whether it is removed.
type routeIdentity struct {
	dest   string
	table  int
	metric int
	hasM   bool
	absent bool
}

// routes checks each route and that no route is listed twice.
func (v *validator) routes(config []*Route) {
	seen := map[routeIdentity]int{}
	for i, r := range config {
		path := fmt.Sprintf("routes.config[%d]", i)
		if r == nil {
			v.add(path, "empty route entry")
			continue
		}
		dst := v.route(path, r)
		if dst.IsValid() {
			k := routeIdentity{dest: dst.String(), table: tableOf(r.TableID), absent: r.State == StateAbsent}
			if r.Metric != nil {
				k.metric, k.hasM = *r.Metric, true
			} else if r.State != StateAbsent {
				k.metric, k.hasM = defaultMetric(dst), true
			}
			if j, dup := seen[k]; dup {
				v.add(path, "same route as routes.config[%d] (destination, table_id and metric identify a route)", j)
			} else {
				seen[k] = i
			}
		}
	}
}

// route checks one route's fields and returns its destination (invalid
// when the destination is).
func (v *validator) route(path string, r *Route) netip.Prefix {
	var dst netip.Prefix
	if r.Destination == "" {
		v.add(path+".destination", "a route needs a destination (CIDR; 0.0.0.0/0 or ::/0 for a default route)")
	} else if d, err := parseCIDR(r.Destination); err != nil {
		v.add(path+".destination", "%v", err)
	} else {
		dst = d
	}
	switch r.State {
	case "", StateAbsent:
	default:
		v.add(path+".state", "must be \"absent\" or omitted, got %q", r.State)
	}
	if r.TableID < 0 || int64(r.TableID) > 1<<32-1 {
		v.add(path+".table_id", "table %d is out of range 0..4294967295", r.TableID)
	} else if r.TableID == localTable {
		v.add(path+".table_id", "table 255 (local) belongs to the kernel and is not managed")
	}
	if r.Metric != nil && (*r.Metric < 0 || int64(*r.Metric) > 1<<32-1) {
		v.add(path+".metric", "metric %d is out of range 0..4294967295", *r.Metric)
	}
	if r.NextHopAddress != "" {
		if a, err := parseIP(r.NextHopAddress); err != nil {
			v.add(path+".next_hop_address", "%v", err)
		} else if dst.IsValid() && a.Is4() != dst.Addr().Is4() {
			v.add(path+".next_hop_address", "gateway %s is not of the destination's address family (%s)", r.NextHopAddress, r.Destination)
		}
	}
	if r.Source != "" {
		if a, err := parseIP(r.Source); err != nil {
			v.add(path+".source", "%v", err)
		} else if dst.IsValid() && a.Is4() != dst.Addr().Is4() {
			v.add(path+".source", "source %s is not of the destination's address family (%s)", r.Source, r.Destination)
		}
	}
	if r.NextHopInterface != "" {
		if err := ValidName(r.NextHopInterface); err != nil {
			v.add(path+".next_hop_interface", "%v", err)
		} else if ni := v.byName[r.NextHopInterface]; ni != nil && ni.State == StateAbsent && r.State != StateAbsent {
			v.add(path+".next_hop_interface", "interface %q is removed by this document (state: absent)", r.NextHopInterface)
		}
	}
	switch r.RouteType {
	case "", RouteUnicast:
		if r.State != StateAbsent && r.NextHopAddress == "" && r.NextHopInterface == "" {
			v.add(path, "a unicast route needs next_hop_address or next_hop_interface")
		}
	case RouteBlackhole, RouteUnreachable, RouteProhibit:
		if r.NextHopAddress != "" || r.NextHopInterface != "" {
			v.add(path+".route_type", "a %s route has no next hop", r.RouteType)
		}
	default:
		v.add(path+".route_type", "must be unicast, blackhole, unreachable or prohibit, got %q", r.RouteType)
	}
	return dst
}

// probes checks each probe: an address to ping and a timeout in range.
func (v *validator) probes(probes []*Probe) {
	for i, pr := range probes {
		path := fmt.Sprintf("probes[%d]", i)
		if pr == nil {
			v.add(path, "empty probe entry")
			continue
		}
		if pr.Ping == "" {
			v.add(path+".ping", "a probe needs ping: the address that must answer")
		} else if _, err := parseIP(pr.Ping); err != nil {
			v.add(path+".ping", "%v", err)
		}
		if pr.Timeout != "" {
			d, err := time.ParseDuration(pr.Timeout)
			switch {
			case err != nil:
				v.add(path+".timeout", "invalid duration %q (e.g. 2s, 500ms)", pr.Timeout)
			case d <= 0 || d > maxProbeTimeout:
				v.add(path+".timeout", "timeout %s is out of range (0s, 60s]", d)
			}
		}
	}
}

func validType(t string) error {
	if t == "" || len(t) > 32 {
		return fmt.Errorf("invalid type %q", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("invalid type %q (known: %s, ethernet, loopback)", t, strings.Join(creatable, ", "))
		}
	}
	return nil
}

func validIPs(ps *state.Problems, path string, c *IPConfig, v6 bool) {
	if c == nil {
		return
	}
	family, maxLen := "IPv4", 32
	if v6 {
		family, maxLen = "IPv6", 128
	}
	seen := map[string]int{}
	for j, a := range c.Address {
		ap := fmt.Sprintf("%s.address[%d]", path, j)
		ip, err := parseIP(a.IP)
		if err != nil {
			*ps = append(*ps, state.Problem{Path: ap + ".ip", Msg: err.Error()})
			continue
		}
		if ip.Is6() != v6 {
			*ps = append(*ps, state.Problem{Path: ap + ".ip", Msg: fmt.Sprintf("%s is not an %s address", a.IP, family)})
			continue
		}
		if v6 && ip.IsLinkLocalUnicast() {
			*ps = append(*ps, state.Problem{Path: ap + ".ip", Msg: fmt.Sprintf("%s is link-local (fe80::/10); the kernel manages link-local addresses and op-dbus does not", a.IP)})
			continue
		}
		if a.PrefixLength < 1 || a.PrefixLength > maxLen {
			*ps = append(*ps, state.Problem{Path: ap + ".prefix_length", Msg: fmt.Sprintf("prefix length %d is out of range 1..%d", a.PrefixLength, maxLen)})
			continue
		}
		// IPv6 identifies an address by the address alone, IPv4 by
		// address and prefix.
		key := ip.String()
		if !v6 {
			key = fmt.Sprintf("%s/%d", ip, a.PrefixLength)
		}
		if k, dup := seen[key]; dup {
			*ps = append(*ps, state.Problem{Path: ap, Msg: fmt.Sprintf("%s is listed twice (also address[%d])", a.CIDR(), k)})
			continue
		}
		seen[key] = j
	}
}
