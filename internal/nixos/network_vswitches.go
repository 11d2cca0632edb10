package nixos

// Open vSwitch bridges as networking.vswitches, with ovs-vsctl commands in
// extraOvsctlCmds for what has no NixOS option.

import (
	"bytes"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugins/ovs"
)

// ovsDevice types are the interfaces networking.vswitches.NAME.interfaces
// can hold: NixOS waits for every non-internal one to exist as a device
// before it configures the switch. Others (patch, tunnels, tap) are added
// with ovs-vsctl commands in extraOvsctlCmds.
func ovsDevice(t string) bool { return t == "" || t == "system" || t == "internal" }

var ovsBare = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// ovsAtom writes a string for ovs-vsctl's value syntax: bare when plain,
// otherwise a double-quoted JSON string.
func ovsAtom(s string) string {
	if ovsBare.MatchString(s) {
		return s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

var shBare = regexp.MustCompile(`^[A-Za-z0-9_.,:=/@%+-]+$`)

// shWord quotes s for the shell NixOS pastes extraOvsctlCmds into.
func shWord(s string) string {
	if shBare.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func ovsLine(args ...string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = shWord(a)
	}
	return strings.Join(out, " ")
}

// mapCmds are `set TABLE NAME column:key=value` per key, sorted.
func mapCmds(table, name, column string, m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, ovsLine("set", table, name, column+":"+ovsAtom(k)+"="+ovsAtom(m[k])))
	}
	return out
}

func (g *netGen) vswitches(st *ovs.State) {
	for _, bn := range slices.Sorted(maps.Keys(st.Bridges)) {
		b := st.Bridges[bn]
		what := "ovs.bridges." + bn
		if b == nil {
			continue
		}
		if b.State == "absent" {
			g.r.left(what, "state absent: NixOS creates only the switches it names")
			continue
		}
		if !safeName.MatchString(bn) {
			g.r.left(what, "the name has characters NixOS's vswitch script does not quote")
			continue
		}
		var cmds []string
		var mapped []string
		if b.FailMode == "secure" {
			cmds = append(cmds, ovsLine("set-fail-mode", bn, "secure"))
			mapped = append(mapped, "fail_mode")
		}
		if b.DatapathType != "" && b.DatapathType != "system" {
			cmds = append(cmds, ovsLine("set", "Bridge", bn, "datapath_type="+ovsAtom(b.DatapathType)))
			mapped = append(mapped, "datapath_type")
		}
		if len(b.ExternalIDs) > 0 {
			cmds = append(cmds, mapCmds("Bridge", bn, "external_ids", b.ExternalIDs)...)
			mapped = append(mapped, "external_ids")
		}
		if len(b.OtherConfig) > 0 {
			cmds = append(cmds, mapCmds("Bridge", bn, "other_config", b.OtherConfig)...)
			mapped = append(mapped, "other_config")
		}
		ifaces := &Set{}
		var portNames []string
		for _, pn := range slices.Sorted(maps.Keys(b.Ports)) {
			p := b.Ports[pn]
			pw := what + ".ports." + pn
			if p == nil {
				p = &ovs.Port{}
			}
			if p.State == "absent" {
				g.r.left(pw, "state absent: the switch is created afresh with only the ports named")
				continue
			}
			if !safeName.MatchString(pn) {
				g.r.left(pw, "the name has characters NixOS's vswitch script does not quote")
				continue
			}
			var live []string
			for _, in := range slices.Sorted(maps.Keys(p.Interfaces)) {
				if i := p.Interfaces[in]; i == nil || i.State != "absent" {
					live = append(live, in)
				}
			}
			if len(live) == 0 {
				live = []string{pn} // add-port makes an interface of the port's name
			}
			if len(live) > 1 || live[0] != pn {
				g.r.left(pw, "a port whose interfaces ("+strings.Join(live, ", ")+") are not one of its own name (a bond): networking.vswitches adds one interface per port; add it with ovs-vsctl add-bond by hand")
				continue
			}
			iface := p.Interfaces[pn]
			if iface == nil {
				iface = &ovs.Interface{}
			}
			tag, _, _ := ovsOptInt(p.Tag)
			own := pn == bn
			var portCmds []string
			switch {
			case own:
				// add-br makes the bridge's own internal port.
				if tag != nil {
					portCmds = append(portCmds, ovsLine("set", "Port", pn, "tag="+strconv.Itoa(*tag)))
				}
			case ovsDevice(iface.Type):
				e := &Set{}
				e.Add("name", pn)
				if tag != nil {
					e.Add("vlan", *tag)
				}
				if iface.Type == "internal" {
					e.Add("type", "internal")
				}
				ifaces.Entries = append(ifaces.Entries, Entry{Path: []string{pn}, Value: e})
			default:
				if !ovsBare.MatchString(iface.Type) {
					g.r.left(pw, "interface type "+strconv.Quote(iface.Type)+" is not a plain word")
					continue
				}
				add := []string{"add-port", bn, pn}
				if tag != nil {
					add = append(add, "tag="+strconv.Itoa(*tag))
				}
				portCmds = append(portCmds, ovsLine(add...), ovsLine("set", "Interface", pn, "type="+iface.Type))
			}
			if len(p.Trunks) > 0 {
				ts := make([]string, len(p.Trunks))
				for i, v := range p.Trunks {
					ts[i] = strconv.Itoa(v)
				}
				portCmds = append(portCmds, ovsLine("set", "Port", pn, "trunks="+strings.Join(ts, ",")))
			}
			portCmds = append(portCmds, mapCmds("Port", pn, "external_ids", p.ExternalIDs)...)
			portCmds = append(portCmds, mapCmds("Interface", pn, "options", iface.Options)...)
			if mtu, _, _ := ovsOptInt(iface.MTURequest); mtu != nil {
				portCmds = append(portCmds, ovsLine("set", "Interface", pn, "mtu_request="+strconv.Itoa(*mtu)))
			}
			portCmds = append(portCmds, mapCmds("Interface", pn, "external_ids", iface.ExternalIDs)...)
			cmds = append(cmds, portCmds...)
			if !own {
				portNames = append(portNames, pn)
			}
		}
		s := &Set{}
		s.Add("interfaces", ifaces)
		if len(cmds) > 0 {
			// One ovs-vsctl command per line, as a list so each reads on
			// its own (depth 2: inside networking.vswitches.NAME).
			s.Add("extraOvsctlCmds", linesExpr(cmds, 2))
		}
		g.switches = append(g.switches, Entry{Path: []string{"networking", "vswitches", bn}, Value: s})
		desc := "ports: " + orNone(portNames)
		if len(mapped) > 0 {
			desc += "; " + strings.Join(mapped, ", ") + " in extraOvsctlCmds"
		}
		g.r.mapped(what+" ("+desc+")", "networking.vswitches."+AttrName(bn)+" (in network.nix)")
	}
	if len(g.switches) > 0 {
		g.switches[0].Comment = []string{
			"Open vSwitch bridges. NixOS re-creates each switch at boot (del-br, add-br) with the",
			"ports named here; its own internal port comes with add-br. Patch and tunnel ports,",
			"and settings without a NixOS option, are ovs-vsctl commands in extraOvsctlCmds.",
		}
		g.r.left("Open vSwitch flows, controllers, QoS, mirrors, port vlan_mode, bonds", "the ovs plugin does not capture them")
	}
}

// linesExpr is the lines joined by newlines, written as
// builtins.concatStringsSep "\n" [ ... ] for a binding at depth (the
// module's top level is depth 1). No line may hold a newline: each is one
// command NixOS pastes after " -- ".
func linesExpr(lines []string, depth int) Raw {
	var b strings.Builder
	b.WriteString(`builtins.concatStringsSep "\n" [` + "\n")
	for _, l := range lines {
		b.WriteString(strings.Repeat("  ", depth+1) + String(l) + "\n")
	}
	b.WriteString(strings.Repeat("  ", depth) + "]")
	return Raw(b.String())
}

// ovsOptInt reads a nullable integer (tag, mtu_request); nil for null or
// left out.
func ovsOptInt(raw json.RawMessage) (*int, bool, error) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return nil, len(t) > 0, nil
	}
	n, err := strconv.Atoi(string(t))
	if err != nil {
		return nil, true, err
	}
	return &n, true, nil
}
