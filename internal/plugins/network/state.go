package network

import (
	"fmt"
	"net/netip"
	"time"
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
