package networkmanager

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Settings is a connection's settings as NetworkManager sends and takes
// them (a{sa{sv}}): setting name → property → value.
type Settings = map[string]map[string]dbus.Variant

// fromSettings decodes the part of a profile this plugin manages. It never
// reads secrets: GetSettings does not return them and nothing here asks
// for them. Values of unexpected types are treated as unset, never a panic:
// the input comes from another process.
func fromSettings(s Settings) *Connection {
	c := &Connection{State: statePresent}
	con := s["connection"]
	c.ID = str(con["id"])
	c.UUID = str(con["uuid"])
	t := str(con["type"])
	c.Type = shortType(t)
	ifname := str(con["interface-name"])
	c.InterfaceName = &ifname
	auto := boolOr(con["autoconnect"], true) // NetworkManager's default
	c.Autoconnect = &auto
	ctrl, pt := str(con["master"]), str(con["slave-type"])
	c.Controller, c.PortType = &ctrl, &pt
	if eth, ok := s["802-3-ethernet"]; ok {
		if v, ok := eth["mtu"].Value().(uint32); ok && v != 0 {
			c.MTU = &v
		}
	}
	if t == "bridge" {
		stp := boolOr(s["bridge"]["stp"], true) // NetworkManager's default
		c.Bridge = &Bridge{STP: &stp}
	}
	if t == "veth" {
		peer := str(s["veth"]["peer"])
		c.Veth = &Veth{Peer: &peer}
	}
	if ctrl == "" {
		if ip, ok := s["ipv4"]; ok {
			c.IPv4 = ipFromSettings(ip, false)
		}
		if ip, ok := s["ipv6"]; ok {
			c.IPv6 = ipFromSettings(ip, true)
		}
	}
	return c
}

func ipFromSettings(m map[string]dbus.Variant, v6 bool) *IP {
	ip := &IP{Method: str(m["method"]), Addresses: []string{}, DNS: []string{}}
	gw := str(m["gateway"])
	ip.Gateway = &gw
	if ad, ok := m["address-data"].Value().([]map[string]dbus.Variant); ok {
		for _, a := range ad {
			addr, err := netip.ParseAddr(str(a["address"]))
			prefix, ok := a["prefix"].Value().(uint32)
			if err != nil || !ok || int(prefix) > addr.BitLen() {
				continue
			}
			ip.Addresses = append(ip.Addresses, netip.PrefixFrom(addr, int(prefix)).String())
		}
	}
	switch d := m["dns"].Value().(type) {
	case []uint32: // ipv4: network byte order in a host integer
		if !v6 {
			for _, n := range d {
				var b [4]byte
				binary.NativeEndian.PutUint32(b[:], n)
				ip.DNS = append(ip.DNS, netip.AddrFrom4(b).String())
			}
		}
	case [][]byte: // ipv6
		if v6 {
			for _, raw := range d {
				if len(raw) == 16 {
					ip.DNS = append(ip.DNS, netip.AddrFrom16([16]byte(raw)).String())
				}
			}
		}
	}
	return ip
}

func str(v dbus.Variant) string {
	s, _ := v.Value().(string)
	return s
}

func boolOr(v dbus.Variant, def bool) bool {
	if b, ok := v.Value().(bool); ok {
		return b
	}
	return def
}

// newSettings builds the settings of a new profile with the given UUID.
func newSettings(key, uuid string, d *Connection) Settings {
	id := key
	if d.ID != "" {
		id = d.ID
	}
	s := Settings{"connection": {
		"id":   dbus.MakeVariant(id),
		"uuid": dbus.MakeVariant(uuid),
		"type": dbus.MakeVariant(nmType(d.Type)),
	}}
	applyFields(s, d)
	return s
}

// applyFields writes the fields d names into s (the settings of a new
// profile, or GetSettings of an existing one), leaving everything else in
// s as it was.
func applyFields(s Settings, d *Connection) {
	set := func(setting, key string, v any) {
		if s[setting] == nil {
			s[setting] = map[string]dbus.Variant{}
		}
		s[setting][key] = dbus.MakeVariant(v)
	}
	setOrDel := func(setting, key, v string) {
		if v == "" {
			delete(s[setting], key)
			return
		}
		set(setting, key, v)
	}
	if d.ID != "" {
		set("connection", "id", d.ID)
	}
	if d.InterfaceName != nil {
		setOrDel("connection", "interface-name", *d.InterfaceName)
	}
	if d.Autoconnect != nil {
		set("connection", "autoconnect", *d.Autoconnect)
	}
	if d.Controller != nil {
		setOrDel("connection", "master", *d.Controller)
		if *d.Controller != "" {
			// A port has no IP configuration of its own.
			delete(s, "ipv4")
			delete(s, "ipv6")
		} else {
			delete(s["connection"], "slave-type")
		}
	}
	if d.PortType != nil {
		setOrDel("connection", "slave-type", *d.PortType)
	}
	if d.MTU != nil {
		set("802-3-ethernet", "mtu", *d.MTU)
	}
	if d.Bridge != nil && d.Bridge.STP != nil {
		set("bridge", "stp", *d.Bridge.STP)
	}
	if d.Veth != nil && d.Veth.Peer != nil {
		set("veth", "peer", *d.Veth.Peer)
	}
	applyIP(s, "ipv4", d.IPv4, false)
	applyIP(s, "ipv6", d.IPv6, true)
}

func applyIP(s Settings, name string, ip *IP, v6 bool) {
	if ip == nil {
		return
	}
	m := s[name]
	if m == nil {
		m = map[string]dbus.Variant{}
		s[name] = m
	}
	// GetSettings returns the deprecated "addresses" and "routes" next to
	// "address-data" and "route-data"; sent back, they would make
	// NetworkManager ignore the -data forms.
	delete(m, "addresses")
	delete(m, "routes")
	if ip.Method != "" {
		m["method"] = dbus.MakeVariant(ip.Method)
		if ip.Method == "disabled" || ip.Method == "ignore" {
			// Not allowed with these methods; NetworkManager would refuse.
			delete(m, "address-data")
			delete(m, "gateway")
		}
	}
	if ip.Addresses != nil {
		data := make([]map[string]dbus.Variant, 0, len(ip.Addresses))
		for _, a := range ip.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				continue // Validate rejected it already
			}
			data = append(data, map[string]dbus.Variant{
				"address": dbus.MakeVariant(p.Addr().String()),
				"prefix":  dbus.MakeVariant(uint32(p.Bits())),
			})
		}
		m["address-data"] = dbus.MakeVariant(data)
	}
	if ip.Gateway != nil {
		if *ip.Gateway == "" {
			delete(m, "gateway")
		} else {
			m["gateway"] = dbus.MakeVariant(*ip.Gateway)
		}
	}
	if ip.DNS != nil {
		if v6 {
			dns := make([][]byte, 0, len(ip.DNS))
			for _, d := range ip.DNS {
				if a, err := netip.ParseAddr(d); err == nil && a.Is6() {
					b := a.As16()
					dns = append(dns, b[:])
				}
			}
			m["dns"] = dbus.MakeVariant(dns)
		} else {
			dns := make([]uint32, 0, len(ip.DNS))
			for _, d := range ip.DNS {
				if a, err := netip.ParseAddr(d); err == nil && a.Is4() {
					b := a.As4()
					dns = append(dns, binary.NativeEndian.Uint32(b[:]))
				}
			}
			m["dns"] = dbus.MakeVariant(dns)
		}
	}
}

// plannedUUID is the UUID a new profile gets when the document gives none:
// derived from its id (RFC 4122 version 5 layout over SHA-1), so plans are
// stable and rollback knows which profile to delete.
func plannedUUID(id string) string {
	h := sha1.Sum([]byte("op-dbus networkmanager connection\x00" + id))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// connectionsFromSettings turns every profile's settings into the state's
// connection map: keyed by id, or by UUID (with id set) for profiles that
// share an id.
func connectionsFromSettings(all []Settings) map[string]*Connection {
	byID := map[string][]*Connection{}
	for _, s := range all {
		c := fromSettings(s)
		if c.UUID == "" {
			continue
		}
		byID[c.ID] = append(byID[c.ID], c)
	}
	out := make(map[string]*Connection, len(all))
	for id, cs := range byID {
		if len(cs) == 1 && id != "" {
			cs[0].ID = ""
			out[id] = cs[0]
			continue
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].UUID < cs[j].UUID })
		for _, c := range cs {
			out[c.UUID] = c
		}
	}
	return out
}

// sendable returns a copy of settings read with GetSettings that can be
// sent back with Update2 or AddConnection2. The deprecated ipv4/ipv6
// "addresses" and "routes" duplicate "address-data" and "route-data" and
// would make NetworkManager ignore those; they are dropped. Any other value
// holding a D-Bus struct cannot be re-encoded faithfully by godbus, so it
// is an error rather than a silent change.
func sendable(s Settings) (Settings, error) {
	out := make(Settings, len(s))
	for name, m := range s {
		c := make(map[string]dbus.Variant, len(m))
		for k, v := range m {
			if (name == "ipv4" || name == "ipv6") && (k == "addresses" || k == "routes") {
				continue
			}
			if strings.ContainsRune(v.Signature().String(), '(') {
				return nil, fmt.Errorf("setting %s.%s has type %s, which op-dbus cannot send back unchanged; change this profile with nmcli", name, k, v.Signature())
			}
			c[k] = v
		}
		out[name] = c
	}
	return out, nil
}
