package ovs

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Action kinds, in txData.Actions.
const (
	addBridge = "add-bridge"
	setBridge = "set-bridge"
	delBridge = "del-bridge"
	addPort   = "add-port"
	setPort   = "set-port"
	delPort   = "del-port"
	addIface  = "add-interface"
	setIface  = "set-interface"
	delIface  = "del-interface"
)

// OpID is the ID of the one op an ovs plan has.
const OpID = "ovs/transact"

// txData is the machine form of the ovs op: the changes, by name, that
// Apply turns into one OVSDB transaction. Names (not row UUIDs) keep a
// saved plan meaningful; Apply resolves them when it runs.
type txData struct {
	Actions []action `json:"actions"`
}

// action is one change to one row. For add-* the spec is the whole new
// item (defaults filled in by Plan); for set-* it holds only the fields to
// change.
type action struct {
	Kind      string     `json:"kind"`
	Bridge    string     `json:"bridge"`
	Port      string     `json:"port,omitempty"`
	Interface string     `json:"interface,omitempty"`
	BridgeSet *Bridge    `json:"bridge_fields,omitempty"`
	PortSet   *Port      `json:"port_fields,omitempty"`
	IfaceSet  *Interface `json:"interface_fields,omitempty"`
}

// path is the state path of the row the action changes.
func (a action) path() string {
	switch {
	case a.Interface != "":
		return ifacePath(a.Bridge, a.Port, a.Interface)
	case a.Port != "":
		return portPath(a.Bridge, a.Port)
	}
	return bridgePath(a.Bridge)
}

func (a action) String() string {
	switch a.Kind {
	case addBridge:
		n := 0
		if a.BridgeSet != nil {
			n = len(a.BridgeSet.Ports)
		}
		return fmt.Sprintf("add bridge %s (%d port%s)", a.Bridge, n, plural(n))
	case setBridge:
		return "set bridge " + a.Bridge
	case delBridge:
		return "delete bridge " + a.Bridge
	case addPort:
		return fmt.Sprintf("add port %s to %s", a.Port, a.Bridge)
	case setPort:
		return fmt.Sprintf("set port %s on %s", a.Port, a.Bridge)
	case delPort:
		return fmt.Sprintf("delete port %s from %s", a.Port, a.Bridge)
	case addIface:
		return fmt.Sprintf("add interface %s to port %s", a.Interface, a.Port)
	case setIface:
		return fmt.Sprintf("set interface %s", a.Interface)
	case delIface:
		return fmt.Sprintf("delete interface %s from port %s", a.Interface, a.Port)
	}
	return a.Kind
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Items: "bridges/NAME" (the bridge's own columns, or the whole bridge when
// it is added or deleted) and "bridges/NAME/ports/NAME" (a port with its
// interfaces); names are path-escaped. The one op of a plan touches many
// items, so its Item lists them separated by spaces.
func bridgeItem(b string) string  { return "bridges/" + url.PathEscape(b) }
func portItem(b, p string) string { return bridgeItem(b) + "/ports/" + url.PathEscape(p) }

// Plan implements plugin.Plugin. Every change becomes one action of a
// single op, "ovs/transact", which Apply carries out as one atomic OVSDB
// transaction; the op's Changes list each field. Pure.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	cur, _ := current.(*State)
	des, _ := desired.(*State)
	if des == nil || len(des.Bridges) == 0 {
		return nil, nil
	}
	if cur == nil {
		cur = &State{}
	}
	pl := &planner{cur: cur, des: des, items: map[string]bool{}}
	if err := pl.run(); err != nil {
		return nil, err
	}
	if len(pl.actions) == 0 {
		return nil, nil
	}
	var descs []string
	for i, a := range pl.actions {
		if i == 4 && len(pl.actions) > 5 {
			descs = append(descs, fmt.Sprintf("and %d more", len(pl.actions)-4))
			break
		}
		descs = append(descs, a.String())
	}
	items := slices.Sorted(maps.Keys(pl.items))
	return []plugin.Op{{
		ID:          OpID,
		Item:        strings.Join(items, " "),
		Description: "OVSDB transaction: " + strings.Join(descs, ", "),
		Data:        plugin.MustData(txData{Actions: pl.actions}),
		Reversible:  true,
		Changes:     pl.changes,
	}}, nil
}

type planner struct {
	cur, des *State
	actions  []action
	changes  []plugin.Change
	items    map[string]bool
}

func (pl *planner) change(path string, cur, des any) {
	pl.changes = append(pl.changes, plugin.Change{Path: path, Current: cur, Desired: des})
}

// owner finds the bridge a port is on in the current state.
func (pl *planner) portOwner(port string) string {
	for _, bn := range slices.Sorted(maps.Keys(pl.cur.Bridges)) {
		if b := pl.cur.Bridges[bn]; b != nil {
			if _, ok := b.Ports[port]; ok {
				return bn
			}
		}
	}
	return ""
}

// ifaceOwner finds the bridge and port an interface is on currently.
func (pl *planner) ifaceOwner(iface string) (string, string) {
	for _, bn := range slices.Sorted(maps.Keys(pl.cur.Bridges)) {
		b := pl.cur.Bridges[bn]
		if b == nil {
			continue
		}
		for _, pn := range slices.Sorted(maps.Keys(b.Ports)) {
			if pt := b.Ports[pn]; pt != nil {
				if _, ok := pt.Interfaces[iface]; ok {
					return bn, pn
				}
			}
		}
	}
	return "", ""
}

// leaving reports whether desired removes port from bridge (the port or
// the whole bridge is absent), which frees its name for another bridge.
func (pl *planner) portLeaving(bridge, port string) bool {
	b := pl.des.Bridges[bridge]
	if b == nil {
		return false
	}
	if !present(b.State) {
		return true
	}
	pt, ok := b.Ports[port]
	return ok && pt != nil && !present(pt.State)
}

func (pl *planner) ifaceLeaving(bridge, port, iface string) bool {
	if pl.portLeaving(bridge, port) {
		return true
	}
	b := pl.des.Bridges[bridge]
	if b == nil || b.Ports[port] == nil {
		return false
	}
	in, ok := b.Ports[port].Interfaces[iface]
	return ok && in != nil && !present(in.State)
}

func (pl *planner) run() error {
	for _, bn := range slices.Sorted(maps.Keys(pl.des.Bridges)) {
		d := pl.des.Bridges[bn]
		if d == nil {
			d = &Bridge{}
		}
		c := pl.cur.Bridges[bn]
		bp := bridgePath(bn)
		switch {
		case !present(d.State):
			if c != nil {
				pl.actions = append(pl.actions, action{Kind: delBridge, Bridge: bn})
				pl.change(bp+".state", "present", "absent")
				pl.items[bridgeItem(bn)] = true
			}
		case c == nil:
			spec, err := pl.newBridge(bn, d)
			if err != nil {
				return err
			}
			pl.actions = append(pl.actions, action{Kind: addBridge, Bridge: bn, BridgeSet: spec})
			pl.change(bp+".state", "absent", "present")
			pl.items[bridgeItem(bn)] = true
		default:
			if err := pl.updateBridge(bn, c, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// newBridge is the full spec of a bridge to create: its columns and its
// ports, with the internal port named like the bridge added.
func (pl *planner) newBridge(bn string, d *Bridge) (*Bridge, error) {
	spec := &Bridge{DatapathType: d.DatapathType, FailMode: d.FailMode, ExternalIDs: d.ExternalIDs, OtherConfig: d.OtherConfig, Ports: map[string]*Port{}}
	for _, pn := range slices.Sorted(maps.Keys(d.Ports)) {
		dp := d.Ports[pn]
		if dp != nil && !present(dp.State) {
			continue
		}
		ps, err := pl.newPort(bn, pn, dp)
		if err != nil {
			return nil, err
		}
		spec.Ports[pn] = ps
	}
	if _, ok := spec.Ports[bn]; !ok {
		if own, ok := d.Ports[bn]; !ok || own == nil || present(own.State) {
			ps, err := pl.newPort(bn, bn, nil)
			if err != nil {
				return nil, err
			}
			spec.Ports[bn] = ps
		}
	}
	return spec, nil
}

// newPort is the full spec of a port to create on bridge bn. A port that
// names no interfaces gets one of its own name: internal if it is the
// bridge's own port, else of the default type (an existing device).
func (pl *planner) newPort(bn, pn string, d *Port) (*Port, error) {
	if d == nil {
		d = &Port{}
	}
	if ob := pl.portOwner(pn); ob != "" && ob != bn && !pl.portLeaving(ob, pn) {
		return nil, fmt.Errorf("%s: port %s is on bridge %s now; mark it absent there (%s.state: absent) to move it", portPath(bn, pn), pn, ob, portPath(ob, pn))
	}
	spec := &Port{Tag: d.Tag, Trunks: d.Trunks, ExternalIDs: d.ExternalIDs, Interfaces: map[string]*Interface{}}
	for _, in := range slices.Sorted(maps.Keys(d.Interfaces)) {
		di := d.Interfaces[in]
		if di != nil && !present(di.State) {
			continue
		}
		if err := pl.checkIfaceFree(bn, pn, in); err != nil {
			return nil, err
		}
		spec.Interfaces[in] = newIface(bn, in, di)
	}
	if len(spec.Interfaces) == 0 {
		if len(d.Interfaces) > 0 {
			return nil, fmt.Errorf("%s.interfaces: every interface is absent; a port needs at least one", portPath(bn, pn))
		}
		if err := pl.checkIfaceFree(bn, pn, pn); err != nil {
			return nil, err
		}
		spec.Interfaces[pn] = newIface(bn, pn, nil)
	}
	return spec, nil
}

func newIface(bn, in string, d *Interface) *Interface {
	spec := &Interface{}
	if d != nil {
		spec = &Interface{Type: d.Type, Options: d.Options, MTURequest: d.MTURequest, ExternalIDs: d.ExternalIDs}
	}
	if spec.Type == "" && in == bn {
		spec.Type = "internal"
	}
	return spec
}

func (pl *planner) checkIfaceFree(bn, pn, in string) error {
	ob, op := pl.ifaceOwner(in)
	if ob == "" || (ob == bn && op == pn) || pl.ifaceLeaving(ob, op, in) {
		return nil
	}
	return fmt.Errorf("%s: interface %s is on port %s of bridge %s now; mark it (or its port) absent there to move it", ifacePath(bn, pn, in), in, op, ob)
}

func (pl *planner) updateBridge(bn string, c, d *Bridge) error {
	bp := bridgePath(bn)
	set := &Bridge{}
	changed := false
	if d.DatapathType != "" && normDatapath(d.DatapathType) != normDatapath(c.DatapathType) {
		set.DatapathType = d.DatapathType
		pl.change(bp+".datapath_type", c.DatapathType, d.DatapathType)
		changed = true
	}
	if d.FailMode != "" && d.FailMode != normFailMode(c.FailMode) {
		set.FailMode = d.FailMode
		pl.change(bp+".fail_mode", normFailMode(c.FailMode), d.FailMode)
		changed = true
	}
	if d.ExternalIDs != nil && !maps.Equal(d.ExternalIDs, c.ExternalIDs) {
		set.ExternalIDs = d.ExternalIDs
		pl.change(bp+".external_ids", showMap(c.ExternalIDs), d.ExternalIDs)
		changed = true
	}
	if d.OtherConfig != nil && !maps.Equal(d.OtherConfig, c.OtherConfig) {
		set.OtherConfig = d.OtherConfig
		pl.change(bp+".other_config", showMap(c.OtherConfig), d.OtherConfig)
		changed = true
	}
	if changed {
		pl.actions = append(pl.actions, action{Kind: setBridge, Bridge: bn, BridgeSet: set})
		pl.items[bridgeItem(bn)] = true
	}
	for _, pn := range slices.Sorted(maps.Keys(d.Ports)) {
		dp := d.Ports[pn]
		cp := c.Ports[pn]
		pp := portPath(bn, pn)
		switch {
		case dp != nil && !present(dp.State):
			if cp != nil {
				pl.actions = append(pl.actions, action{Kind: delPort, Bridge: bn, Port: pn})
				pl.change(pp+".state", "present", "absent")
				pl.items[portItem(bn, pn)] = true
			}
		case cp == nil:
			if _, onBridge := c.Ports[pn]; onBridge {
				// "p": null in current cannot happen from Query; treat as
				// present with nothing known.
				cp = &Port{}
				if err := pl.updatePort(bn, pn, cp, dp); err != nil {
					return err
				}
				continue
			}
			spec, err := pl.newPort(bn, pn, dp)
			if err != nil {
				return err
			}
			pl.actions = append(pl.actions, action{Kind: addPort, Bridge: bn, Port: pn, PortSet: spec})
			pl.change(pp+".state", "absent", "present")
			pl.items[portItem(bn, pn)] = true
		default:
			if dp == nil {
				continue
			}
			if err := pl.updatePort(bn, pn, cp, dp); err != nil {
				return err
			}
		}
	}
	return nil
}

func normFailMode(m string) string {
	if m == "" {
		return "standalone"
	}
	return m
}

// showMap renders a current map for a Change: {} rather than null.
func showMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (pl *planner) updatePort(bn, pn string, c, d *Port) error {
	pp := portPath(bn, pn)
	set := &Port{}
	changed := false
	if dt, dset, err := optInt(d.Tag); err != nil {
		return fmt.Errorf("%s.tag: %w", pp, err)
	} else if dset {
		ct, _, _ := optInt(c.Tag)
		if !eqIntPtr(ct, dt) {
			set.Tag = rawInt(dt)
			pl.change(pp+".tag", intOrNil(ct), intOrNil(dt))
			changed = true
		}
	}
	if d.Trunks != nil && !slices.Equal(sortedInts(d.Trunks), sortedInts(c.Trunks)) {
		set.Trunks = sortedInts(d.Trunks)
		pl.change(pp+".trunks", sortedInts(c.Trunks), sortedInts(d.Trunks))
		changed = true
	}
	if d.ExternalIDs != nil && !maps.Equal(d.ExternalIDs, c.ExternalIDs) {
		set.ExternalIDs = d.ExternalIDs
		pl.change(pp+".external_ids", showMap(c.ExternalIDs), d.ExternalIDs)
		changed = true
	}
	if changed {
		pl.actions = append(pl.actions, action{Kind: setPort, Bridge: bn, Port: pn, PortSet: set})
		pl.items[portItem(bn, pn)] = true
	}
	remaining := len(c.Interfaces)
	for _, in := range slices.Sorted(maps.Keys(d.Interfaces)) {
		di := d.Interfaces[in]
		ci, exists := c.Interfaces[in]
		ip := ifacePath(bn, pn, in)
		switch {
		case di != nil && !present(di.State):
			if exists {
				remaining--
				pl.actions = append(pl.actions, action{Kind: delIface, Bridge: bn, Port: pn, Interface: in})
				pl.change(ip+".state", "present", "absent")
				pl.items[portItem(bn, pn)] = true
			}
		case !exists:
			if err := pl.checkIfaceFree(bn, pn, in); err != nil {
				return err
			}
			remaining++
			pl.actions = append(pl.actions, action{Kind: addIface, Bridge: bn, Port: pn, Interface: in, IfaceSet: newIface(bn, in, di)})
			pl.change(ip+".state", "absent", "present")
			pl.items[portItem(bn, pn)] = true
		default:
			if di == nil {
				continue
			}
			if ci == nil {
				ci = &Interface{}
			}
			if err := pl.updateIface(bn, pn, in, ci, di); err != nil {
				return err
			}
		}
	}
	if remaining <= 0 && len(c.Interfaces) > 0 {
		return fmt.Errorf("%s.interfaces: removing every interface would leave the port with none; mark the port absent instead", pp)
	}
	return nil
}

func (pl *planner) updateIface(bn, pn, in string, c, d *Interface) error {
	ip := ifacePath(bn, pn, in)
	set := &Interface{}
	changed := false
	if d.Type != "" && normType(d.Type) != normType(c.Type) {
		set.Type = d.Type
		pl.change(ip+".type", normType(c.Type), d.Type)
		changed = true
	}
	if d.Options != nil && !maps.Equal(d.Options, c.Options) {
		set.Options = d.Options
		pl.change(ip+".options", showMap(c.Options), d.Options)
		changed = true
	}
	if dm, dset, err := optInt(d.MTURequest); err != nil {
		return fmt.Errorf("%s.mtu_request: %w", ip, err)
	} else if dset {
		cm, _, _ := optInt(c.MTURequest)
		if !eqIntPtr(cm, dm) {
			set.MTURequest = rawInt(dm)
			pl.change(ip+".mtu_request", intOrNil(cm), intOrNil(dm))
			changed = true
		}
	}
	if d.ExternalIDs != nil && !maps.Equal(d.ExternalIDs, c.ExternalIDs) {
		set.ExternalIDs = d.ExternalIDs
		pl.change(ip+".external_ids", showMap(c.ExternalIDs), d.ExternalIDs)
		changed = true
	}
	if changed {
		pl.actions = append(pl.actions, action{Kind: setIface, Bridge: bn, Port: pn, Interface: in, IfaceSet: set})
		pl.items[portItem(bn, pn)] = true
	}
	return nil
}

func eqIntPtr(a, b *int) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func intOrNil(v *int) any {
	if v == nil {
		return nil
	}
	return *v
}

// Subset implements plugin.Plugin: the pre-apply state of the touched
// items, so that applying it undoes a transaction. A touched bridge that
// existed comes back whole (columns and every port it had); one that did
// not is marked absent. A touched port that existed comes back whole; one
// that did not is marked absent, so rollback deletes what the transaction
// created.
func (p *Plugin) Subset(st any, items []string) any {
	s, _ := st.(*State)
	if s == nil {
		s = &State{}
	}
	out := &State{Bridges: map[string]*Bridge{}}
	var ports [][2]string
	for _, field := range items {
		for _, it := range strings.Fields(field) {
			parts := strings.Split(it, "/")
			if len(parts) < 2 || parts[0] != "bridges" {
				continue
			}
			bn, err := url.PathUnescape(parts[1])
			if err != nil {
				continue
			}
			switch {
			case len(parts) == 2:
				if b := s.Bridges[bn]; b != nil {
					out.Bridges[bn] = restorable(b)
				} else {
					out.Bridges[bn] = &Bridge{State: "absent"}
				}
			case len(parts) == 4 && parts[2] == "ports":
				pn, err := url.PathUnescape(parts[3])
				if err == nil {
					ports = append(ports, [2]string{bn, pn})
				}
			}
		}
	}
	for _, bp := range ports {
		bn, pn := bp[0], bp[1]
		b := s.Bridges[bn]
		if b == nil {
			if _, ok := out.Bridges[bn]; !ok {
				out.Bridges[bn] = &Bridge{State: "absent"}
			}
			continue
		}
		ob := out.Bridges[bn]
		if ob == nil {
			ob = &Bridge{Ports: map[string]*Port{}}
			out.Bridges[bn] = ob
		}
		if ob.State == "absent" {
			continue
		}
		if ob.Ports == nil {
			ob.Ports = map[string]*Port{}
		}
		if pt := b.Ports[pn]; pt != nil {
			ob.Ports[pn] = restorablePort(pt)
		} else {
			ob.Ports[pn] = &Port{State: "absent"}
		}
	}
	return out
}

// restorable copies a queried bridge without its read-only fields.
func restorable(b *Bridge) *Bridge {
	out := &Bridge{DatapathType: b.DatapathType, FailMode: b.FailMode, ExternalIDs: copyNil(b.ExternalIDs), OtherConfig: copyNil(b.OtherConfig), Ports: map[string]*Port{}}
	for pn, pt := range b.Ports {
		if pt != nil {
			out.Ports[pn] = restorablePort(pt)
		}
	}
	return out
}

func restorablePort(pt *Port) *Port {
	out := &Port{Tag: pt.Tag, Trunks: pt.Trunks, ExternalIDs: copyNil(pt.ExternalIDs), Interfaces: map[string]*Interface{}}
	for in, i := range pt.Interfaces {
		if i == nil {
			continue
		}
		out.Interfaces[in] = &Interface{Type: i.Type, Options: copyNil(i.Options), MTURequest: i.MTURequest, ExternalIDs: copyNil(i.ExternalIDs)}
	}
	return out
}

func copyNil(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	return copyMap(m)
}

// decodeTx reads an op's Data.
func decodeTx(data json.RawMessage) (*txData, error) {
	var tx txData
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tx); err != nil {
		return nil, fmt.Errorf("ovs: bad op data: %w", err)
	}
	for i, a := range tx.Actions {
		if a.Bridge == "" {
			return nil, fmt.Errorf("ovs: bad op data: action %d (%s) names no bridge", i, a.Kind)
		}
		switch a.Kind {
		case addBridge, setBridge:
			if a.BridgeSet == nil {
				return nil, fmt.Errorf("ovs: bad op data: action %d (%s) has no bridge_fields", i, a.Kind)
			}
		case delBridge:
		case addPort, setPort:
			if a.Port == "" || a.PortSet == nil {
				return nil, fmt.Errorf("ovs: bad op data: action %d (%s) needs port and port_fields", i, a.Kind)
			}
		case delPort:
			if a.Port == "" {
				return nil, fmt.Errorf("ovs: bad op data: action %d (%s) names no port", i, a.Kind)
			}
		case addIface, setIface:
			if a.Port == "" || a.Interface == "" || a.IfaceSet == nil {
				return nil, fmt.Errorf("ovs: bad op data: action %d (%s) needs port, interface and interface_fields", i, a.Kind)
			}
		case delIface:
			if a.Port == "" || a.Interface == "" {
				return nil, fmt.Errorf("ovs: bad op data: action %d (%s) needs port and interface", i, a.Kind)
			}
		default:
			return nil, fmt.Errorf("ovs: bad op data: action %d: unknown kind %q", i, a.Kind)
		}
	}
	return &tx, nil
}
