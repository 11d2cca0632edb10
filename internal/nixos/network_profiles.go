package nixos

// NetworkManager profiles as networking.networkmanager.ensureProfiles.

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugins/networkmanager"
)

// uuidRE matches a profile UUID (a query keys profiles that share an id by
// their UUID).
var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// storeUnsafe: ensureProfiles turns each profile's attribute name into a
// file (and store path) name, which allows only characters outside this set.
var storeUnsafe = regexp.MustCompile(`[^A-Za-z0-9+._?=-]`)

// nmProfiles maps the networkmanager plugin's connections to
// ensureProfiles entries and records which links each profile owns.
func (g *netGen) nmProfiles(st *networkmanager.State) {
	used := map[string]bool{}
	for _, key := range slices.Sorted(maps.Keys(st.Connections)) {
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
