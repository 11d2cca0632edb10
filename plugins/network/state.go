package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the network part of a state document, shaped after nmstate:
// interfaces keyed by name, routes under routes.config, plus declared probes.
type State struct {
	Interfaces []*Interface `json:"interfaces,omitempty" jsonschema:"description=Links by name. Links not named here are left alone; a link is removed only with state: absent."`
	Routes     *Routes      `json:"routes,omitempty" jsonschema:"description=Routes. Routes not named here are left alone unless a config entry with state: absent matches them."`
	Probes     []*Probe     `json:"probes,omitempty" jsonschema:"description=Checks run during verification after every field matches; a failed probe fails the apply and rolls it back."`
}

// Interface types.
const (
	TypeBridge   = "bridge"
	TypeVeth     = "veth"
	TypeVXLAN    = "vxlan"
	TypeDummy    = "dummy"
	TypeVLAN     = "vlan"
	TypeBond     = "bond"
	TypeEthernet = "ethernet"
	TypeLoopback = "loopback"
)

// creatable are the types apply can create. dummy, vlan and bond need the
// kernel to have those link kinds; apply says so when it does not.
var creatable = []string{TypeBridge, TypeVeth, TypeVXLAN, TypeDummy, TypeVLAN, TypeBond}

// Interface states.
const (
	StateUp     = "up"
	StateDown   = "down"
	StateAbsent = "absent"
)

// Interface is one link. Every field but name is optional: what is not named
// is not managed.
type Interface struct {
	Name  string `json:"name" jsonschema:"required,maxLength=15,description=Kernel link name (at most 15 bytes; no '/'\\, ':' or whitespace)"`
	Type  string `json:"type,omitempty" jsonschema:"description=Link kind. Created when missing for bridge\\, veth\\, vxlan\\, dummy\\, vlan\\, bond; query also reports ethernet\\, loopback and other kernel kinds (openvswitch\\, wireguard\\, tun...). An existing link of another type is an error."`
	State string `json:"state,omitempty" jsonschema:"enum=up,enum=down,enum=absent,description=up/down: administrative state (IFF_UP); absent: delete the link. Omitted: a link this document creates is brought up\\, an existing one is left as it is."`
	MTU   *int   `json:"mtu,omitempty" jsonschema:"minimum=68,maximum=65535"`
	// MACAddress is the link-layer address, "aa:bb:cc:dd:ee:ff".
	MACAddress string `json:"mac_address,omitempty" jsonschema:"description=Link-layer address aa:bb:cc:dd:ee:ff"`
	// Controller is the bridge or bond this link is a port of; "" detaches.
	Controller *string   `json:"controller,omitempty" jsonschema:"description=The bridge (or bond) this link is a port of (the kernel's master). Empty string: no controller."`
	IPv4       *IPConfig `json:"ipv4,omitempty" jsonschema:"description=IPv4 addresses. When given\\, the listed addresses are the full set (others are removed)."`
	IPv6       *IPConfig `json:"ipv6,omitempty" jsonschema:"description=IPv6 addresses. When given\\, the listed addresses are the full set. Link-local fe80::/10 addresses are the kernel's and not managed."`
	Bridge     *Bridge   `json:"bridge,omitempty" jsonschema:"description=Bridge settings (type bridge only)"`
	Veth       *Veth     `json:"veth,omitempty" jsonschema:"description=Veth settings (type veth only)"`
	VXLAN      *VXLAN    `json:"vxlan,omitempty" jsonschema:"description=VXLAN settings (type vxlan only)"`
	VLAN       *VLAN     `json:"vlan,omitempty" jsonschema:"description=VLAN settings (type vlan only)"`
	Bond       *BondConf `json:"bond,omitempty" jsonschema:"description=Bond settings (type bond only)"`
}

// IPConfig is the address list of one family.
type IPConfig struct {
	Address []Address `json:"address" jsonschema:"description=The full list of addresses of this family on the link"`
}

// Address is one IP address with its prefix length.
type Address struct {
	IP           string `json:"ip" jsonschema:"description=IP address without prefix (10.0.0.1\\, 2001:db8::1)"`
	PrefixLength int    `json:"prefix_length" jsonschema:"minimum=1,maximum=128"`
}

// CIDR is the address as "ip/prefix".
func (a Address) CIDR() string { return fmt.Sprintf("%s/%d", a.IP, a.PrefixLength) }

// Bridge holds bridge settings.
type Bridge struct {
	// Port lists the bridge's ports; when given it is the full set.
	Port []BridgePort `json:"port,omitempty" jsonschema:"description=Ports of the bridge. When given\\, the full set: listed links get this bridge as controller and other current ports are detached."`
}

// BridgePort names one port.
type BridgePort struct {
	Name string `json:"name"`
}

// Veth holds veth settings.
type Veth struct {
	Peer string `json:"peer" jsonschema:"description=Name of the other end (created with this one)"`
}

// VXLAN holds VXLAN settings. They can be given when the link is created;
// an existing link with other settings must be removed first.
type VXLAN struct {
	ID              int    `json:"id" jsonschema:"minimum=0,maximum=16777215,description=VXLAN network identifier (VNI)"`
	Remote          string `json:"remote,omitempty" jsonschema:"description=Remote VTEP or multicast group address"`
	Local           string `json:"local,omitempty" jsonschema:"description=Local source address"`
	DestinationPort int    `json:"destination_port,omitempty" jsonschema:"minimum=0,maximum=65535,description=UDP destination port (omitted: the kernel's default\\, 8472)"`
	BaseIface       string `json:"base_iface,omitempty" jsonschema:"description=Underlying link"`
}

// VLAN holds VLAN settings.
type VLAN struct {
	BaseIface string `json:"base_iface" jsonschema:"description=Underlying link"`
	ID        int    `json:"id" jsonschema:"minimum=1,maximum=4094"`
}

// BondConf holds bond settings.
type BondConf struct {
	Mode string `json:"mode,omitempty" jsonschema:"enum=balance-rr,enum=active-backup,enum=balance-xor,enum=broadcast,enum=802.3ad,enum=balance-tlb,enum=balance-alb"`
}

// Routes holds route entries.
type Routes struct {
	Config []*Route `json:"config,omitempty" jsonschema:"description=Routes. A route is identified by destination\\, table_id and metric."`
}

// Route types.
const (
	RouteUnicast     = "unicast"
	RouteBlackhole   = "blackhole"
	RouteUnreachable = "unreachable"
	RouteProhibit    = "prohibit"
)

// Route is one route.
type Route struct {
	Destination      string `json:"destination" jsonschema:"description=Destination network in CIDR form (0.0.0.0/0 and ::/0 for default routes)"`
	NextHopAddress   string `json:"next_hop_address,omitempty" jsonschema:"description=Gateway address"`
	NextHopInterface string `json:"next_hop_interface,omitempty" jsonschema:"description=Outgoing link"`
	TableID          int    `json:"table_id,omitempty" jsonschema:"minimum=0,description=Routing table (omitted or 0: main\\, 254)"`
	// Metric nil means the kernel default (0 for IPv4, 1024 for IPv6) for a
	// route to add, and any metric for a route to remove.
	Metric    *int   `json:"metric,omitempty" jsonschema:"minimum=0,description=Route priority (omitted: 0 for IPv4\\, 1024 for IPv6; with state absent: any metric)"`
	Source    string `json:"source,omitempty" jsonschema:"description=Preferred source address"`
	RouteType string `json:"route_type,omitempty" jsonschema:"enum=unicast,enum=blackhole,enum=unreachable,enum=prohibit"`
	State     string `json:"state,omitempty" jsonschema:"enum=absent,description=absent: remove every route matching the given fields"`
}

// Probe is a check run during verification.
type Probe struct {
	Ping    string `json:"ping" jsonschema:"description=IPv4 or IPv6 address that must answer an ICMP echo"`
	Timeout string `json:"timeout,omitempty" jsonschema:"description=How long to wait for a reply (Go duration\\, default 2s\\, at most 60s)"`
}

// DefaultProbeTimeout is the wait for a probe without a timeout.
const DefaultProbeTimeout = 2 * time.Second

const maxProbeTimeout = time.Minute

func (p *Probe) timeout() time.Duration {
	if p.Timeout == "" {
		return DefaultProbeTimeout
	}
	d, err := time.ParseDuration(p.Timeout)
	if err != nil || d <= 0 {
		return DefaultProbeTimeout
	}
	return d
}

// MainTable is the kernel's main routing table.
const MainTable = 254

const localTable = 255

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

func validate(s *State) state.Problems {
	var ps state.Problems
	add := func(path, format string, a ...any) {
		ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	byName := map[string]*Interface{}
	firstAt := map[string]int{}
	for i, ifc := range s.Interfaces {
		path := fmt.Sprintf("interfaces[%d]", i)
		if ifc == nil {
			add(path, "empty interface entry")
			continue
		}
		if err := ValidName(ifc.Name); err != nil {
			add(path+".name", "%v", err)
		} else if j, dup := firstAt[ifc.Name]; dup {
			add(path+".name", "interface %q is listed twice (also interfaces[%d]); list each interface once", ifc.Name, j)
		} else {
			firstAt[ifc.Name] = i
			byName[ifc.Name] = ifc
		}
	}
	// bridge.port: which bridge claims each port.
	portOf := map[string]string{}
	for i, ifc := range s.Interfaces {
		if ifc == nil || ifc.Bridge == nil {
			continue
		}
		path := fmt.Sprintf("interfaces[%d].bridge", i)
		if ifc.Type != "" && ifc.Type != TypeBridge {
			add(path, "bridge settings on an interface of type %q", ifc.Type)
		}
		for j, port := range ifc.Bridge.Port {
			pp := fmt.Sprintf("%s.port[%d].name", path, j)
			if err := ValidName(port.Name); err != nil {
				add(pp, "%v", err)
				continue
			}
			if port.Name == ifc.Name {
				add(pp, "bridge %q cannot be a port of itself", ifc.Name)
				continue
			}
			if other, ok := portOf[port.Name]; ok && other != ifc.Name {
				add(pp, "%q is already a port of bridge %q; a link can be a port of one bridge only", port.Name, other)
				continue
			}
			portOf[port.Name] = ifc.Name
			if pi := byName[port.Name]; pi != nil && pi.Controller != nil && *pi.Controller != ifc.Name {
				add(pp, "%q is listed as a port of %q but its controller is %q; a link can be a port of one bridge only", port.Name, ifc.Name, *pi.Controller)
			}
			if pi := byName[port.Name]; pi != nil && pi.State == StateAbsent {
				add(pp, "port %q is removed by this document (state: absent)", port.Name)
			}
		}
	}
	for i, ifc := range s.Interfaces {
		if ifc == nil {
			continue
		}
		path := fmt.Sprintf("interfaces[%d]", i)
		switch ifc.State {
		case "", StateUp, StateDown, StateAbsent:
		default:
			add(path+".state", "must be \"up\", \"down\" or \"absent\", got %q", ifc.State)
		}
		if ifc.Type != "" {
			if err := validType(ifc.Type); err != nil {
				add(path+".type", "%v", err)
			}
		}
		if ifc.State == StateAbsent {
			if ifc.Type == TypeLoopback || ifc.Name == "lo" {
				add(path+".state", "the loopback interface cannot be removed")
			}
			continue
		}
		if ifc.MTU != nil && (*ifc.MTU < 68 || *ifc.MTU > 65535) {
			// The loopback's own default MTU is 65536.
			if !(*ifc.MTU == 65536 && (ifc.Type == TypeLoopback || ifc.Name == "lo")) {
				add(path+".mtu", "mtu %d is out of range 68..65535", *ifc.MTU)
			}
		}
		if ifc.MACAddress != "" {
			if hw, err := net.ParseMAC(ifc.MACAddress); err != nil || len(hw) != 6 {
				add(path+".mac_address", "invalid MAC address %q (want six hex bytes, aa:bb:cc:dd:ee:ff)", ifc.MACAddress)
			}
		}
		if c := ifc.Controller; c != nil && *c != "" {
			switch err := ValidName(*c); {
			case err != nil:
				add(path+".controller", "%v", err)
			case *c == ifc.Name:
				add(path+".controller", "%q cannot be a port of itself", ifc.Name)
			default:
				if ci := byName[*c]; ci != nil {
					if ci.State == StateAbsent {
						add(path+".controller", "controller %q is removed by this document (state: absent)", *c)
					} else if ci.Type != "" && ci.Type != TypeBridge && ci.Type != TypeBond {
						add(path+".controller", "controller %q is of type %q; only a bridge or bond can have ports", *c, ci.Type)
					}
				}
			}
		}
		validIPs(&ps, path+".ipv4", ifc.IPv4, false)
		validIPs(&ps, path+".ipv6", ifc.IPv6, true)

		sections := map[string]bool{TypeVeth: ifc.Veth != nil, TypeVXLAN: ifc.VXLAN != nil, TypeVLAN: ifc.VLAN != nil, TypeBond: ifc.Bond != nil}
		for kind, has := range sections {
			if has && ifc.Type != kind {
				add(path+"."+kind, "%s settings need type %q, got type %q", kind, kind, ifc.Type)
			}
		}
		switch ifc.Type {
		case TypeVeth:
			switch {
			case ifc.Veth == nil || ifc.Veth.Peer == "":
				add(path+".veth.peer", "a veth needs veth.peer, the name of its other end")
			case ValidName(ifc.Veth.Peer) != nil:
				add(path+".veth.peer", "%v", ValidName(ifc.Veth.Peer))
			case ifc.Veth.Peer == ifc.Name:
				add(path+".veth.peer", "a veth cannot be its own peer")
			default:
				if pi := byName[ifc.Veth.Peer]; pi != nil && pi.State != StateAbsent {
					if pi.Type != "" && pi.Type != TypeVeth {
						add(path+".veth.peer", "peer %q is listed with type %q", ifc.Veth.Peer, pi.Type)
					} else if pi.Veth != nil && pi.Veth.Peer != "" && pi.Veth.Peer != ifc.Name {
						add(path+".veth.peer", "peer %q names %q as its own peer, not %q", ifc.Veth.Peer, pi.Veth.Peer, ifc.Name)
					}
				}
			}
		case TypeVXLAN:
			v := ifc.VXLAN
			if v == nil {
				add(path+".vxlan", "a vxlan needs vxlan.id")
				break
			}
			if v.ID < 0 || v.ID > 1<<24-1 {
				add(path+".vxlan.id", "VNI %d is out of range 0..16777215", v.ID)
			}
			if v.Remote != "" {
				if _, err := parseIP(v.Remote); err != nil {
					add(path+".vxlan.remote", "%v", err)
				}
			}
			if v.Local != "" {
				if _, err := parseIP(v.Local); err != nil {
					add(path+".vxlan.local", "%v", err)
				}
			}
			if v.DestinationPort < 0 || v.DestinationPort > 65535 {
				add(path+".vxlan.destination_port", "port %d is out of range 0..65535", v.DestinationPort)
			}
			if v.BaseIface != "" {
				if err := ValidName(v.BaseIface); err != nil {
					add(path+".vxlan.base_iface", "%v", err)
				}
			}
		case TypeVLAN:
			v := ifc.VLAN
			if v == nil {
				add(path+".vlan", "a vlan needs vlan.base_iface and vlan.id")
				break
			}
			if err := ValidName(v.BaseIface); err != nil {
				add(path+".vlan.base_iface", "%v", err)
			}
			if v.ID < 1 || v.ID > 4094 {
				add(path+".vlan.id", "VLAN id %d is out of range 1..4094", v.ID)
			}
		case TypeBond:
			if ifc.Bond != nil && ifc.Bond.Mode != "" && bondMode(ifc.Bond.Mode) < 0 {
				add(path+".bond.mode", "unknown bond mode %q", ifc.Bond.Mode)
			}
		}
	}
	if s.Routes != nil {
		type rkey struct {
			dest   string
			table  int
			metric int
			hasM   bool
			absent bool
		}
		seen := map[rkey]int{}
		for i, r := range s.Routes.Config {
			path := fmt.Sprintf("routes.config[%d]", i)
			if r == nil {
				add(path, "empty route entry")
				continue
			}
			var dst netip.Prefix
			if r.Destination == "" {
				add(path+".destination", "a route needs a destination (CIDR; 0.0.0.0/0 or ::/0 for a default route)")
			} else if d, err := parseCIDR(r.Destination); err != nil {
				add(path+".destination", "%v", err)
			} else {
				dst = d
			}
			switch r.State {
			case "", StateAbsent:
			default:
				add(path+".state", "must be \"absent\" or omitted, got %q", r.State)
			}
			if r.TableID < 0 || int64(r.TableID) > 1<<32-1 {
				add(path+".table_id", "table %d is out of range 0..4294967295", r.TableID)
			} else if r.TableID == localTable {
				add(path+".table_id", "table 255 (local) belongs to the kernel and is not managed")
			}
			if r.Metric != nil && (*r.Metric < 0 || int64(*r.Metric) > 1<<32-1) {
				add(path+".metric", "metric %d is out of range 0..4294967295", *r.Metric)
			}
			if r.NextHopAddress != "" {
				if a, err := parseIP(r.NextHopAddress); err != nil {
					add(path+".next_hop_address", "%v", err)
				} else if dst.IsValid() && a.Is4() != dst.Addr().Is4() {
					add(path+".next_hop_address", "gateway %s is not of the destination's address family (%s)", r.NextHopAddress, r.Destination)
				}
			}
			if r.Source != "" {
				if a, err := parseIP(r.Source); err != nil {
					add(path+".source", "%v", err)
				} else if dst.IsValid() && a.Is4() != dst.Addr().Is4() {
					add(path+".source", "source %s is not of the destination's address family (%s)", r.Source, r.Destination)
				}
			}
			if r.NextHopInterface != "" {
				if err := ValidName(r.NextHopInterface); err != nil {
					add(path+".next_hop_interface", "%v", err)
				} else if ni := byName[r.NextHopInterface]; ni != nil && ni.State == StateAbsent && r.State != StateAbsent {
					add(path+".next_hop_interface", "interface %q is removed by this document (state: absent)", r.NextHopInterface)
				}
			}
			switch r.RouteType {
			case "", RouteUnicast:
				if r.State != StateAbsent && r.NextHopAddress == "" && r.NextHopInterface == "" {
					add(path, "a unicast route needs next_hop_address or next_hop_interface")
				}
			case RouteBlackhole, RouteUnreachable, RouteProhibit:
				if r.NextHopAddress != "" || r.NextHopInterface != "" {
					add(path+".route_type", "a %s route has no next hop", r.RouteType)
				}
			default:
				add(path+".route_type", "must be unicast, blackhole, unreachable or prohibit, got %q", r.RouteType)
			}
			if dst.IsValid() {
				k := rkey{dest: dst.String(), table: tableOf(r.TableID), absent: r.State == StateAbsent}
				if r.Metric != nil {
					k.metric, k.hasM = *r.Metric, true
				} else if r.State != StateAbsent {
					k.metric, k.hasM = defaultMetric(dst), true
				}
				if j, dup := seen[k]; dup {
					add(path, "same route as routes.config[%d] (destination, table_id and metric identify a route)", j)
				} else {
					seen[k] = i
				}
			}
		}
	}
	for i, pr := range s.Probes {
		path := fmt.Sprintf("probes[%d]", i)
		if pr == nil {
			add(path, "empty probe entry")
			continue
		}
		if pr.Ping == "" {
			add(path+".ping", "a probe needs ping: the address that must answer")
		} else if _, err := parseIP(pr.Ping); err != nil {
			add(path+".ping", "%v", err)
		}
		if pr.Timeout != "" {
			d, err := time.ParseDuration(pr.Timeout)
			switch {
			case err != nil:
				add(path+".timeout", "invalid duration %q (e.g. 2s, 500ms)", pr.Timeout)
			case d <= 0 || d > maxProbeTimeout:
				add(path+".timeout", "timeout %s is out of range (0s, 60s]", d)
			}
		}
	}
	return ps
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

func tableOf(t int) int {
	if t == 0 {
		return MainTable
	}
	return t
}

func defaultMetric(dst netip.Prefix) int {
	if dst.Addr().Is6() {
		return 1024
	}
	return 0
}

var bondModes = []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}

func bondMode(s string) int {
	for i, m := range bondModes {
		if m == s {
			return i
		}
	}
	return -1
}
