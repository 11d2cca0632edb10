package networkmanager

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the networkmanager part of a state document.
type State struct {
	// Connections maps a connection profile's id (connection.id) to what it
	// should be. Profiles not named here are left alone.
	Connections map[string]*Connection `json:"connections,omitempty" jsonschema:"description=NetworkManager connection profiles by id (connection.id). Profiles not named here are left alone; removal is explicit with state: absent."`
	// Devices is read-only: what query saw. Plan ignores it.
	Devices map[string]*Device `json:"devices,omitempty" jsonschema:"readOnly=true,description=read-only: NetworkManager's devices by interface name; ignored by plan"`
}

// Connection is one profile. Every field is optional: an absent field is
// not managed. Creating a profile needs at least type.
type Connection struct {
	State string `json:"state,omitempty" jsonschema:"enum=present,enum=absent,description=present (default) or absent: delete the profile(s) with this id"`
	// ID is connection.id when it differs from the key; query uses it only
	// when several profiles share an id (their keys are then their UUIDs).
	ID string `json:"id,omitempty" jsonschema:"description=connection.id when it differs from the map key (several profiles with one id)"`
	// UUID identifies the profile when given; on create it becomes its UUID.
	UUID          string  `json:"uuid,omitempty" jsonschema:"description=connection.uuid: identifies the profile; used as its UUID when it is created"`
	Type          string  `json:"type,omitempty" jsonschema:"description=connection.type: ethernet\\, bridge\\, bond\\, vlan\\, dummy\\, veth\\, wifi\\, ...; needed to create"`
	InterfaceName *string `json:"interface_name,omitempty" jsonschema:"description=connection.interface-name: the kernel interface the profile applies to"`
	Autoconnect   *bool   `json:"autoconnect,omitempty" jsonschema:"description=connection.autoconnect"`
	// Active: the profile is activated on a device (true) or not (false).
	Active *bool `json:"active,omitempty" jsonschema:"description=activated (true) or not active (false); activation is waited for"`
	// Controller and PortType make the profile a port of a bridge or bond.
	Controller *string `json:"controller,omitempty" jsonschema:"description=connection.master: the controller's interface name (a port of that bridge/bond); empty string: not a port"`
	PortType   *string `json:"port_type,omitempty" jsonschema:"enum=,enum=bridge,enum=bond,enum=team,enum=ovs-port,enum=ovs-bridge,enum=vrf,description=connection.slave-type"`
	MTU        *uint32 `json:"mtu,omitempty" jsonschema:"minimum=68,maximum=65535,description=802-3-ethernet.mtu (ethernet\\, bridge\\, bond\\, veth\\, vlan...)"`
	IPv4       *IP     `json:"ipv4,omitempty"`
	IPv6       *IP     `json:"ipv6,omitempty"`
	Bridge     *Bridge `json:"bridge,omitempty"`
	Veth       *Veth   `json:"veth,omitempty"`

	// Read-only (reported by query, ignored by plan).
	ActiveState string   `json:"active_state,omitempty" jsonschema:"readOnly=true,description=read-only: activating\\, activated\\, deactivating"`
	Devices     []string `json:"devices,omitempty" jsonschema:"readOnly=true,description=read-only: interfaces the profile is active on"`
}

// IP is the ipv4 or ipv6 setting.
type IP struct {
	Method string `json:"method,omitempty" jsonschema:"description=ipv4: auto\\, manual\\, disabled\\, link-local\\, shared; ipv6: auto\\, dhcp\\, manual\\, ignore\\, disabled\\, link-local\\, shared"`
	// Addresses in CIDR form, in order (the first is the primary address).
	Addresses []string `json:"addresses,omitempty" jsonschema:"description=static addresses in CIDR form (10.99.0.1/24); the first is primary"`
	Gateway   *string  `json:"gateway,omitempty" jsonschema:"description=default gateway; empty string: none"`
	DNS       []string `json:"dns,omitempty" jsonschema:"description=DNS servers"`
}

// Bridge is the bridge setting.
type Bridge struct {
	STP *bool `json:"stp,omitempty" jsonschema:"description=bridge.stp (spanning tree; NetworkManager's default is true)"`
}

// Veth is the veth setting: NetworkManager creates the pair itself.
type Veth struct {
	Peer *string `json:"peer,omitempty" jsonschema:"description=veth.peer: the other end's interface name"`
}

// Device is what NetworkManager says about one device (read-only).
type Device struct {
	Type       string `json:"type"`
	State      string `json:"state"`
	Managed    bool   `json:"managed"`
	Real       bool   `json:"real"`
	Connection string `json:"connection,omitempty"`
	MTU        uint32 `json:"mtu,omitempty"`
	Controller string `json:"controller,omitempty"`
}

const (
	statePresent = "present"
	stateAbsent  = "absent"
)

func (c *Connection) absent() bool { return c != nil && c.State == stateAbsent }

// typeAliases maps the names people write to NetworkManager's
// connection.type; query reports the short names.
var typeAliases = map[string]string{
	"ethernet": "802-3-ethernet",
	"wifi":     "802-11-wireless",
	"wired":    "802-3-ethernet",
}

// knownTypes are the connection types this plugin accepts (NetworkManager
// 1.42's connection.type values, plus the aliases above).
var knownTypes = []string{
	"802-3-ethernet", "802-11-wireless", "adsl", "bluetooth", "bond", "bridge", "cdma", "dummy", "generic",
	"gsm", "infiniband", "ip-tunnel", "loopback", "macsec", "macvlan", "olpc-mesh", "ovs-bridge",
	"ovs-interface", "ovs-port", "pppoe", "team", "tun", "veth", "vlan", "vpn", "vrf", "vxlan",
	"wifi-p2p", "wimax", "wireguard", "wpan", "6lowpan",
}

// nmType returns NetworkManager's connection.type for t.
func nmType(t string) string {
	if a, ok := typeAliases[t]; ok {
		return a
	}
	return t
}

// shortType is the name query reports.
func shortType(t string) string {
	switch t {
	case "802-3-ethernet":
		return "ethernet"
	case "802-11-wireless":
		return "wifi"
	}
	return t
}

// mtuTypes carry their MTU in the 802-3-ethernet setting.
var mtuTypes = map[string]bool{"802-3-ethernet": true, "bridge": true, "bond": true, "veth": true, "vlan": true, "team": true, "dummy": true, "macvlan": true, "vxlan": true}

var (
	ipv4Methods = []string{"auto", "manual", "disabled", "link-local", "shared"}
	ipv6Methods = []string{"auto", "dhcp", "manual", "ignore", "disabled", "link-local", "shared"}
	portTypes   = []string{"bridge", "bond", "team", "ovs-port", "ovs-bridge", "vrf"}
)

// ValidInterfaceName follows the kernel's dev_valid_name: 1-15 bytes, not
// "." or "..", no '/', ':' or whitespace.
func ValidInterfaceName(n string) error {
	switch {
	case n == "":
		return fmt.Errorf("empty interface name")
	case len(n) > 15:
		return fmt.Errorf("interface name %q is %d bytes; the kernel allows at most 15", n, len(n))
	case n == "." || n == "..":
		return fmt.Errorf("interface name %q is not allowed", n)
	case strings.ContainsRune(n, '/'):
		return fmt.Errorf("interface name %q contains '/'", n)
	case strings.ContainsRune(n, ':'):
		return fmt.Errorf("interface name %q contains ':'", n)
	}
	for _, r := range n {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("interface name %q contains whitespace or a control character", n)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Validate implements plugin.Validator.
func (p *Plugin) Validate(st any) state.Problems {
	return validate(st.(*State))
}

func validate(s *State) state.Problems {
	var ps state.Problems
	add := func(path, format string, a ...any) {
		ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	keys := slices.Sorted(maps.Keys(s.Connections))
	activeOn := map[string]string{} // interface → key of a connection declared active on it
	for _, key := range keys {
		c := s.Connections[key]
		path := fmt.Sprintf("connections[%q]", key)
		if strings.TrimSpace(key) == "" {
			add(path, "empty connection id")
			continue
		}
		if c == nil {
			continue
		}
		switch c.State {
		case "", statePresent, stateAbsent:
		default:
			add(path+".state", "must be \"present\" or \"absent\", got %q", c.State)
		}
		if c.UUID != "" && !validUUID(c.UUID) {
			add(path+".uuid", "%q is not a UUID (like 0ca700c5-969a-4ecd-a9bc-1edb2f1c4391)", c.UUID)
		}
		if c.absent() {
			continue
		}
		if c.Type != "" && !contains(knownTypes, nmType(c.Type)) {
			add(path+".type", "unknown connection type %q (ethernet, bridge, bond, vlan, dummy, veth, wifi, wireguard, ...)", c.Type)
		}
		t := nmType(c.Type)
		if c.InterfaceName != nil && *c.InterfaceName != "" {
			if err := ValidInterfaceName(*c.InterfaceName); err != nil {
				add(path+".interface_name", "%v", err)
			}
		}
		ctrl := ""
		if c.Controller != nil {
			ctrl = *c.Controller
		}
		pt := ""
		if c.PortType != nil {
			pt = *c.PortType
		}
		if pt != "" && !contains(portTypes, pt) {
			add(path+".port_type", "unknown port type %q (one of %s)", pt, strings.Join(portTypes, ", "))
		}
		if ctrl != "" {
			if !validUUID(ctrl) {
				if err := ValidInterfaceName(ctrl); err != nil {
					add(path+".controller", "%v (give the controller's interface name)", err)
				}
			}
			if c.InterfaceName != nil && *c.InterfaceName == ctrl {
				add(path+".controller", "%q cannot be a port of itself (controller equals interface_name)", ctrl)
			}
			if c.PortType != nil && pt == "" {
				add(path+".port_type", "a port (controller %q) needs a port_type (bridge, bond, ...)", ctrl)
			}
			if c.IPv4 != nil || c.IPv6 != nil {
				add(path, "a port (controller %q) has no IP configuration of its own; remove ipv4/ipv6 or the controller", ctrl)
			}
		} else if c.Controller != nil && pt != "" {
			add(path+".port_type", "port_type %q without a controller", pt)
		}
		if c.MTU != nil {
			if *c.MTU < 68 || *c.MTU > 65535 {
				add(path+".mtu", "%d is out of range (68-65535); omit mtu to leave it alone", *c.MTU)
			} else if t != "" && !mtuTypes[t] {
				add(path+".mtu", "type %q has no 802-3-ethernet MTU setting", c.Type)
			}
		}
		if c.Bridge != nil && t != "" && t != "bridge" {
			add(path+".bridge", "bridge settings on a %q connection", c.Type)
		}
		if c.Veth != nil {
			if t != "" && t != "veth" {
				add(path+".veth", "veth settings on a %q connection", c.Type)
			}
			if c.Veth.Peer != nil {
				if err := ValidInterfaceName(*c.Veth.Peer); err != nil {
					add(path+".veth.peer", "%v", err)
				} else if c.InterfaceName != nil && *c.InterfaceName == *c.Veth.Peer {
					add(path+".veth.peer", "a veth cannot be its own peer")
				}
			}
		}
		validateIP(path+".ipv4", c.IPv4, false, add)
		validateIP(path+".ipv6", c.IPv6, true, add)
		if c.Active != nil && *c.Active && c.InterfaceName != nil && *c.InterfaceName != "" {
			ifc := *c.InterfaceName
			if other, ok := activeOn[ifc]; ok {
				add(path+".active", "connections %q and %q are both declared active on %s; a device has one active connection (a port belongs to one controller)", other, key, ifc)
			} else {
				activeOn[ifc] = key
			}
		}
	}
	return ps
}

func validateIP(path string, ip *IP, v6 bool, add func(string, string, ...any)) {
	if ip == nil {
		return
	}
	methods, fam := ipv4Methods, "IPv4"
	if v6 {
		methods, fam = ipv6Methods, "IPv6"
	}
	if ip.Method != "" && !contains(methods, ip.Method) {
		add(path+".method", "unknown method %q (one of %s)", ip.Method, strings.Join(methods, ", "))
	}
	for i, a := range ip.Addresses {
		pfx, err := netip.ParsePrefix(a)
		switch {
		case err != nil:
			add(fmt.Sprintf("%s.addresses[%d]", path, i), "%q is not an address in CIDR form (like %s)", a, map[bool]string{false: "10.99.0.1/24", true: "fd00::1/64"}[v6])
		case pfx.Addr().Is6() != v6 || pfx.Addr().Is4In6():
			add(fmt.Sprintf("%s.addresses[%d]", path, i), "%q is not an %s address", a, fam)
		case pfx.Addr().Zone() != "":
			add(fmt.Sprintf("%s.addresses[%d]", path, i), "%q: zones are not allowed", a)
		}
	}
	if ip.Gateway != nil && *ip.Gateway != "" {
		if a, err := netip.ParseAddr(*ip.Gateway); err != nil || a.Is6() != v6 || a.Is4In6() {
			add(path+".gateway", "%q is not an %s address", *ip.Gateway, fam)
		}
	}
	for i, d := range ip.DNS {
		if a, err := netip.ParseAddr(d); err != nil || a.Is6() != v6 || a.Is4In6() || a.Zone() != "" {
			add(fmt.Sprintf("%s.dns[%d]", path, i), "%q is not an %s address", d, fam)
		}
	}
	switch ip.Method {
	case "manual":
		if ip.Addresses != nil && len(ip.Addresses) == 0 {
			add(path+".addresses", "method manual needs at least one address")
		}
	case "disabled", "ignore":
		if len(ip.Addresses) > 0 {
			add(path+".addresses", "addresses are not allowed with method %s", ip.Method)
		}
		if ip.Gateway != nil && *ip.Gateway != "" {
			add(path+".gateway", "a gateway is not allowed with method %s", ip.Method)
		}
	}
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
				return false
			}
		}
	}
	return true
}
