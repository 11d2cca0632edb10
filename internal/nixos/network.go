package nixos

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugins/network"
	"github.com/op-dbus/op-dbus/internal/plugins/networkmanager"
	"github.com/op-dbus/op-dbus/internal/plugins/ovs"
	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
	"github.com/op-dbus/op-dbus/internal/plugins/wireguard"
)

// networkModule writes network.nix (WireGuard is added by wireguardInto):
//
//   - networking.networkmanager.enable, from the systemd state, or because
//     the networkmanager plugin names profiles;
//   - NetworkManager profiles as networking.networkmanager.ensureProfiles;
//   - the network plugin's links as networking.bridges, networking.bonds,
//     networking.vlans and networking.interfaces (addresses, routes, MTU,
//     MAC), its default routes as networking.defaultGateway(6);
//   - Open vSwitch bridges as networking.vswitches.
//
// Every choice, mapped or left out, goes to REPORT.md. The output depends
// only on the input: every map is walked in sorted order, every list in
// the order of the state document.
func networkModule(ss *systemd.State, plugins map[string]any, in Input, r *report) (*Set, error) {
	g := &netGen{r: r, in: in, captured: capturedSource(in.Source), nmOwned: map[string]string{}}
	var (
		ns   network.State
		nms  networkmanager.State
		ovst ovs.State
		ws   wireguard.State
	)
	for _, p := range []struct {
		name string
		dst  any
		has  *bool
	}{{"network", &ns, &g.hasNet}, {"networkmanager", &nms, &g.hasNM}, {"ovs", &ovst, &g.hasOVS}, {"wireguard", &ws, nil}} {
		v, ok := plugins[p.name]
		if !ok || v == nil {
			continue
		}
		if err := decodeInto(v, p.dst); err != nil {
			return nil, fmt.Errorf("plugins.%s: %w", p.name, err)
		}
		if p.has != nil {
			*p.has = true
		}
	}
	g.wgRoutes = wireguardRoutes(&ws)

	nm := ss.Units["NetworkManager.service"]
	nmUnit := enabled(nm) || nm != nil && nm.ActiveState == "active"
	g.nmProfiles(&nms)
	g.nmEnabled = nmUnit || len(g.profiles) > 0
	switch {
	case nmUnit:
		g.head = append(g.head, Entry{Path: optPath("networking.networkmanager.enable"), Value: true,
			Comment: []string{"NetworkManager.service is enabled or active on this host."}})
	case g.nmEnabled:
		g.head = append(g.head, Entry{Path: optPath("networking.networkmanager.enable"), Value: true,
			Comment: []string{"The networkmanager plugin names profiles, which need NetworkManager."}})
		r.mapped("networkmanager (profiles present)", "networking.networkmanager.enable (in network.nix)")
	}

	g.links(&ns)
	if g.hasNet {
		r.left("DHCP leases", "a lease's addresses and routes are the DHCP client's, so the network plugin does not capture them; NixOS's default networking.useDHCP = true asks for a lease on every link without static addresses")
	}
	g.routes(&ns)
	g.vswitches(&ovst)
	g.missing(plugins)

	s := &Set{}
	s.Entries = append(s.Entries, g.head...)
	s.Entries = append(s.Entries, g.profiles...)
	if g.nmEnabled && len(g.ours) > 0 {
		names := slices.Sorted(maps.Keys(g.ours))
		specs := make([]string, len(names))
		for i, n := range names {
			specs[i] = "interface-name:" + n
		}
		s.Entries = append(s.Entries, Entry{Path: optPath("networking.networkmanager.unmanaged"), Value: specs,
			Comment: []string{"NetworkManager keeps its hands off the links configured below by networking.*."}})
		r.mapped("links configured by networking.* below ("+strings.Join(names, ", ")+")",
			"networking.networkmanager.unmanaged (in network.nix), so NetworkManager does not fight them")
	}
	s.Entries = append(s.Entries, g.bridges...)
	s.Entries = append(s.Entries, g.bonds...)
	s.Entries = append(s.Entries, g.vlans...)
	for _, name := range slices.Sorted(maps.Keys(g.ifs)) {
		s.Entries = append(s.Entries, Entry{Path: []string{"networking", "interfaces", name}, Value: g.ifs[name].set(), Comment: g.ifNotes[name]})
	}
	s.Entries = append(s.Entries, g.gateways...)
	s.Entries = append(s.Entries, g.switches...)
	s.Trailing = g.trailing
	return s, nil
}

// netGen collects network.nix in sections.
type netGen struct {
	r        *report
	in       Input
	captured bool // the state is a query (live or snapshot), not a written document

	hasNet, hasNM, hasOVS bool
	nmEnabled             bool

	// nmOwned: interface name → the NetworkManager profile that describes it.
	nmOwned map[string]string
	// ours: interfaces networking.* configures (for networkmanager.unmanaged).
	ours map[string]bool
	// wgRoutes: destinations networking.wireguard routes itself, by interface.
	wgRoutes map[string]map[string]bool

	head, profiles, bridges, bonds, vlans, gateways, switches []Entry

	ifs     map[string]*ifData
	ifNotes map[string][]string

	trailing []string
}

func optPath(p string) []string { return strings.Split(p, ".") }

func decodeInto(v, dst any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}

// capturedSource says whether the state was read from a host (a live query
// or a snapshot of one) rather than written by someone: a query reports
// every MAC address and MTU, including the kernel's random MACs of virtual
// links, which a configuration should not pin.
func capturedSource(src string) bool {
	return strings.HasPrefix(src, "the live host") || strings.HasPrefix(src, "snapshot ")
}

// safeName: NixOS writes interface names into shell scripts and systemd
// unit names, quoted with "..." at best; names outside this set are left
// out rather than risk a broken or surprising script.
var safeName = regexp.MustCompile(`^[A-Za-z0-9_.+@-]{1,15}$`)

func (g *netGen) note(lines ...string) { g.trailing = append(g.trailing, lines...) }

// missing says, for each network plugin absent from the state, that what
// it would describe is not in network.nix.
func (g *netGen) missing(plugins map[string]any) {
	why := func(name string) string {
		if e, ok := g.in.Errors[name]; ok {
			return "not captured: the " + name + " plugin could not be read (" + oneLine(e) + ")"
		}
		return "the state has no " + name + " part"
	}
	var lines []string
	if !g.hasNet {
		g.r.left("network links, addresses and routes", why("network")+"; add networking.interfaces, networking.bridges and routes by hand")
		lines = append(lines, "links, addresses, routes (network plugin)")
	}
	if !g.hasNM {
		g.r.left("NetworkManager profiles", why("networkmanager"))
		lines = append(lines, "NetworkManager profiles (networkmanager plugin)")
	}
	if !g.hasOVS {
		g.r.left("Open vSwitch bridges", why("ovs")+"; add networking.vswitches by hand")
		lines = append(lines, "Open vSwitch bridges (ovs plugin)")
	}
	if _, ok := plugins["wireguard"]; !ok {
		lines = append(lines, "WireGuard (wireguard plugin)")
	}
	if len(lines) > 0 {
		g.note("Not in the state, so not configured here (see REPORT.md):")
		g.note(prefixed("  ", lines)...)
	}
}
