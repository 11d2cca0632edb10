package ovs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the ovs part of a state document.
type State struct {
	// Bridges maps a bridge name to what it should be.
	Bridges map[string]*Bridge `json:"bridges,omitempty" jsonschema:"description=OVS bridges by name. Bridges not named here are left alone."`
}

// Bridge is one row of the Bridge table with its ports. A field left out is
// not managed; a map or list that is given replaces the column as a whole.
type Bridge struct {
	State        string            `json:"state,omitempty" jsonschema:"enum=present,enum=absent,description=absent deletes the bridge with all its ports; present (the default) creates it when missing"`
	DatapathType string            `json:"datapath_type,omitempty" jsonschema:"description=system (the kernel datapath; OVS's empty value) or netdev (userspace). Not managed when left out"`
	FailMode     string            `json:"fail_mode,omitempty" jsonschema:"enum=standalone,enum=secure,description=What the bridge does without a controller; OVS treats an unset fail_mode as standalone and query reports it so"`
	ExternalIDs  map[string]string `json:"external_ids,omitzero" jsonschema:"description=The whole external_ids map ({} clears it). Not managed when left out"`
	OtherConfig  map[string]string `json:"other_config,omitzero" jsonschema:"description=The whole other_config map ({} clears it). Not managed when left out"`
	// Ports maps a port name to what it should be. Ports not named are
	// left alone; a port is removed only with state absent (or with its
	// bridge).
	Ports map[string]*Port `json:"ports,omitempty" jsonschema:"description=Ports by name. Ports not named here are left alone. A new bridge gets its internal port (named like the bridge) even when not named here\\, as ovs-vsctl add-br does"`
}

// Port is one row of the Port table with its interfaces.
type Port struct {
	State string `json:"state,omitempty" jsonschema:"enum=present,enum=absent,description=absent removes the port and its interfaces from the bridge"`
	// Tag is the access VLAN: an integer 0..4095, or null for none (an
	// untagged/trunk port). Left out: not managed.
	Tag json.RawMessage `json:"tag,omitempty" jsonschema:"oneof_type=integer;null,minimum=0,maximum=4095,description=Access VLAN 0..4095; null for none. Not managed when left out"`
	// Trunks lists the VLANs a trunk port carries; [] means all VLANs.
	Trunks      []int             `json:"trunks,omitzero" jsonschema:"description=VLANs a trunk port carries ([] = all VLANs). Not managed when left out"`
	ExternalIDs map[string]string `json:"external_ids,omitzero" jsonschema:"description=The whole external_ids map ({} clears it). Not managed when left out"`
	// Interfaces maps an interface name to what it should be. A new port
	// without interfaces gets one interface of its own name (type internal
	// when the port is named like its bridge), as ovs-vsctl add-port does.
	Interfaces map[string]*Interface `json:"interfaces,omitempty" jsonschema:"description=Interfaces by name. A new port that names none gets one interface of its own name (like ovs-vsctl add-port); interfaces not named here are left alone"`
}

// Interface is one row of the Interface table.
type Interface struct {
	State string `json:"state,omitempty" jsonschema:"enum=present,enum=absent,description=absent removes the interface from its port (a port keeps at least one)"`
	// Type is the OVS interface type; "system" is OVS's empty type (an
	// existing network device).
	Type        string            `json:"type,omitempty" jsonschema:"description=system (an existing device; OVS's empty type)\\, internal\\, patch\\, tap\\, vxlan\\, geneve...; not managed when left out (a new interface defaults to system\\, or internal for a bridge's own port)"`
	Options     map[string]string `json:"options,omitzero" jsonschema:"description=The whole options map (peer for patch ports\\, remote_ip for tunnels). Not managed when left out"`
	MTURequest  json.RawMessage   `json:"mtu_request,omitempty" jsonschema:"oneof_type=integer;null,minimum=68,maximum=65535,description=Requested MTU; null for the default. Not managed when left out"`
	ExternalIDs map[string]string `json:"external_ids,omitzero" jsonschema:"description=The whole external_ids map ({} clears it). Not managed when left out"`

	// Read-only (reported by query, ignored by plan).
	OFPort     *int   `json:"ofport,omitempty" jsonschema:"readOnly=true,description=read-only: OpenFlow port number (-1: ovs-vswitchd could not add it)"`
	MTU        *int   `json:"mtu,omitempty" jsonschema:"readOnly=true,description=read-only: MTU the device has"`
	AdminState string `json:"admin_state,omitempty" jsonschema:"readOnly=true,description=read-only: up or down"`
	LinkState  string `json:"link_state,omitempty" jsonschema:"readOnly=true,description=read-only: up or down"`
	Error      string `json:"error,omitempty" jsonschema:"readOnly=true,description=read-only: why ovs-vswitchd could not set the interface up"`
}

// present reports whether an item's state asks for it to exist.
func present(s string) bool { return s != "absent" }

// optInt reads a nullable integer field: set reports whether the field was
// given at all, v is nil for null.
func optInt(raw json.RawMessage) (v *int, set bool, err error) {
	if raw == nil {
		return nil, false, nil
	}
	t := bytes.TrimSpace(raw)
	if string(t) == "null" {
		return nil, true, nil
	}
	var f json.Number
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	if err := dec.Decode(&f); err != nil {
		return nil, true, fmt.Errorf("expected an integer or null, got %s", t)
	}
	n, err := strconv.ParseInt(f.String(), 10, 64)
	if err != nil || n < -1<<31 || n > 1<<31-1 {
		return nil, true, fmt.Errorf("expected an integer or null, got %s", t)
	}
	i := int(n)
	return &i, true, nil
}

// rawInt is the JSON of a nullable integer (null for nil).
func rawInt(v *int) json.RawMessage {
	if v == nil {
		return json.RawMessage("null")
	}
	return json.RawMessage(strconv.Itoa(*v))
}

// Names: OVS bridges, ports and interfaces become kernel devices (bridges
// and internal ports always, system interfaces are existing devices), so
// names follow the kernel's dev_valid_name: 1..15 bytes, no '/', ':' or
// whitespace, not "." or "..".
const maxNameLen = 15

// ValidName reports why name cannot be an OVS bridge, port or interface
// name, or nil.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name %q is %d bytes; Linux interface names are at most %d", name, len(name), maxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("name %q is not a valid interface name", name)
	case strings.ContainsAny(name, "/:"):
		return fmt.Errorf("name %q contains '/' or ':', which Linux interface names cannot", name)
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("name %q contains whitespace or a control character", name)
		}
	}
	return nil
}

func bridgePath(b string) string      { return fmt.Sprintf("bridges[%q]", b) }
func portPath(b, p string) string     { return bridgePath(b) + fmt.Sprintf(".ports[%q]", p) }
func ifacePath(b, p, i string) string { return portPath(b, p) + fmt.Sprintf(".interfaces[%q]", i) }

// peerOf is the patch peer an interface names, "" for none.
func peerOf(i *Interface) string {
	if i == nil || i.Type != "patch" {
		return ""
	}
	return i.Options["peer"]
}

// Validate implements plugin.Validator: names, states, enums, VLAN and MTU
// ranges, a port or interface named under two bridges or ports, and a
// bridge connected to itself (see README.md, "A bridge as its own port").
func (p *Plugin) Validate(st any) state.Problems {
	s, _ := st.(*State)
	if s == nil {
		return nil
	}
	var ps state.Problems
	add := func(path, format string, args ...any) {
		ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	checkState := func(path, v string) {
		if v != "" && v != "present" && v != "absent" {
			add(path+".state", "must be \"present\" or \"absent\", got %q", v)
		}
	}
	portOwner := map[string]string{}  // port name → bridge, for present ports
	ifaceOwner := map[string]string{} // interface name → path of its port
	ifaceBridge := map[string]string{}
	for _, bn := range slices.Sorted(maps.Keys(s.Bridges)) {
		b := s.Bridges[bn]
		bp := bridgePath(bn)
		if err := ValidName(bn); err != nil {
			add(bp, "%v", err)
		}
		if b == nil {
			continue
		}
		checkState(bp, b.State)
		switch b.FailMode {
		case "", "standalone", "secure":
		default:
			add(bp+".fail_mode", "must be \"standalone\" or \"secure\", got %q", b.FailMode)
		}
		if !present(b.State) {
			continue
		}
		for _, pn := range slices.Sorted(maps.Keys(b.Ports)) {
			port := b.Ports[pn]
			pp := portPath(bn, pn)
			if err := ValidName(pn); err != nil {
				add(pp, "%v", err)
			}
			if port == nil {
				continue
			}
			checkState(pp, port.State)
			if !present(port.State) {
				continue
			}
			if other, ok := portOwner[pn]; ok {
				add(pp, "port %s is also on bridge %s; a port belongs to one bridge", pn, other)
			} else {
				portOwner[pn] = bn
			}
			if ob, ok := s.Bridges[pn]; ok && pn != bn && ob != nil && present(ob.State) {
				add(pp, "%s is a bridge; a bridge cannot be a port of another bridge (connect them with a pair of patch ports)", pn)
			}
			if tag, set, err := optInt(port.Tag); err != nil {
				add(pp+".tag", "%v", err)
			} else if set && tag != nil && (*tag < 0 || *tag > 4095) {
				add(pp+".tag", "VLAN tag %d is outside 0..4095", *tag)
			}
			seen := map[int]bool{}
			for i, v := range port.Trunks {
				if v < 0 || v > 4095 {
					add(fmt.Sprintf("%s.trunks[%d]", pp, i), "VLAN %d is outside 0..4095", v)
				} else if seen[v] {
					add(fmt.Sprintf("%s.trunks[%d]", pp, i), "VLAN %d is listed twice", v)
				}
				seen[v] = true
			}
			if len(port.Interfaces) > 0 {
				live := 0
				for _, in := range port.Interfaces {
					if in == nil || present(in.State) {
						live++
					}
				}
				if live == 0 {
					add(pp+".interfaces", "every interface is absent; a port needs at least one (mark the port absent to remove it)")
				}
			}
			for _, in := range slices.Sorted(maps.Keys(port.Interfaces)) {
				iface := port.Interfaces[in]
				ip := ifacePath(bn, pn, in)
				if err := ValidName(in); err != nil {
					add(ip, "%v", err)
				}
				if iface == nil {
					continue
				}
				checkState(ip, iface.State)
				if !present(iface.State) {
					continue
				}
				if other, ok := ifaceOwner[in]; ok {
					add(ip, "interface %s is also in %s; an interface belongs to one port", in, other)
				} else {
					ifaceOwner[in] = pp
					ifaceBridge[in] = bn
				}
				if mtu, set, err := optInt(iface.MTURequest); err != nil {
					add(ip+".mtu_request", "%v", err)
				} else if set && mtu != nil && (*mtu < 68 || *mtu > 65535) {
					add(ip+".mtu_request", "MTU %d is outside 68..65535", *mtu)
				}
				if in == bn && iface.Type != "" && iface.Type != "internal" {
					add(ip+".type", "interface %s is named like its bridge, so it is the bridge's own (local) port and must be type internal, got %q; a bridge cannot be a port of itself", in, iface.Type)
				}
				if iface.Type == "patch" && iface.Options["peer"] == "" {
					add(ip+".options", "a patch interface needs options.peer (the name of the patch interface on the other bridge)")
				}
				if iface.Type == "patch" && iface.Options["peer"] == in {
					add(ip+".options.peer", "a patch interface cannot be its own peer")
				}
			}
		}
	}
	// A patch pair whose two ends are on the same bridge connects the
	// bridge to itself: a loop that forwards every flooded packet back in.
	for _, in := range slices.Sorted(maps.Keys(ifaceOwner)) {
		var iface *Interface
		bn := ifaceBridge[in]
		for _, pn := range slices.Sorted(maps.Keys(s.Bridges[bn].Ports)) {
			if port := s.Bridges[bn].Ports[pn]; port != nil {
				if x, ok := port.Interfaces[in]; ok {
					iface = x
				}
			}
		}
		peer := peerOf(iface)
		if peer == "" || peer == in {
			continue
		}
		if pb, ok := ifaceBridge[peer]; ok && pb == bn {
			add(ifaceOwner[in]+fmt.Sprintf(".interfaces[%q].options.peer", in), "patch peer %s is on the same bridge %s; a bridge patched to itself is its own port (patch ports connect two different bridges)", peer, bn)
		}
	}
	return ps
}
