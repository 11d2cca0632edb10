package networkmanager

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// TransactionID is the ID of the one op a non-empty plan has: every
// connection change of a document runs inside one NetworkManager
// checkpoint (see README.md).
const TransactionID = "networkmanager/transaction"

// itemPrefix starts the op's Item: "connections:UUID,UUID,...", the
// profiles the transaction touches. Subset restores exactly those.
const itemPrefix = "connections:"

// Step actions.
const (
	actAdd    = "add"
	actUpdate = "update"
	actDelete = "delete"
	actNone   = "none" // only (de)activation
)

// step is one profile's part of the transaction, in Op.Data.
type step struct {
	Key    string `json:"key"`
	UUID   string `json:"uuid"`
	Action string `json:"action"`
	// Activate (or reactivate, when the profile was active and its settings
	// changed) after all adds and updates; Deactivate before them.
	Activate   bool `json:"activate,omitempty"`
	Deactivate bool `json:"deactivate,omitempty"`
	// Rename is the new connection.id of a profile matched by UUID.
	Rename string `json:"rename,omitempty"`
	// Conn holds the fields to write (add, update).
	Conn *Connection `json:"connection,omitempty"`
	// Port: the profile is a port of a controller, activated after
	// controllers.
	Port bool `json:"port,omitempty"`
}

// opData is the machine form of the transaction op.
type opData struct {
	Steps []step `json:"steps"`
}

// match finds the current profiles desired (key, d) refers to: by UUID
// when d gives one, else every profile whose id is d.ID or the key.
func match(cur *State, key string, d *Connection) []*Connection {
	var out []*Connection
	if d.UUID != "" {
		for _, k := range slices.Sorted(maps.Keys(cur.Connections)) {
			if c := cur.Connections[k]; c != nil && strings.EqualFold(c.UUID, d.UUID) {
				out = append(out, c)
			}
		}
		return out
	}
	id := key
	if d.ID != "" {
		id = d.ID
	}
	for _, k := range slices.Sorted(maps.Keys(cur.Connections)) {
		c := cur.Connections[k]
		if c != nil && curID(k, c) == id {
			out = append(out, c)
		}
	}
	return out
}

func curID(key string, c *Connection) string {
	if c.ID != "" {
		return c.ID
	}
	return key
}

// Plan implements plugin.Plugin: at most one op, the transaction.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	return plan(current, desired)
}

func plan(current, desired any) ([]plugin.Op, error) {
	cur, _ := current.(*State)
	des, _ := desired.(*State)
	if des == nil || len(des.Connections) == 0 {
		return nil, nil
	}
	if cur == nil {
		cur = &State{}
	}
	var steps []step
	var changes []plugin.Change
	var descs []string
	for _, key := range slices.Sorted(maps.Keys(des.Connections)) {
		d := des.Connections[key]
		if d == nil {
			continue
		}
		path := fmt.Sprintf("connections[%q]", key)
		cs := match(cur, key, d)
		if d.absent() {
			for _, c := range cs {
				steps = append(steps, step{Key: key, UUID: c.UUID, Action: actDelete})
				changes = append(changes, plugin.Change{Path: path + ".state", Current: statePresent, Desired: stateAbsent})
				descs = append(descs, "delete "+describeConn(key, c.UUID, len(cs)))
			}
			continue
		}
		if len(cs) > 1 {
			var uuids []string
			for _, c := range cs {
				uuids = append(uuids, c.UUID)
			}
			return nil, fmt.Errorf("%s: %d profiles have this id (%s); add \"uuid\" to say which one", path, len(cs), strings.Join(uuids, ", "))
		}
		if len(cs) == 0 {
			if d.Type == "" {
				return nil, fmt.Errorf("%s.type: no profile %q exists; give its type (ethernet, bridge, ...) to create it", path, key)
			}
			uuid := strings.ToLower(d.UUID)
			if uuid == "" {
				id := key
				if d.ID != "" {
					id = d.ID
				}
				uuid = plannedUUID(id)
			}
			st := step{Key: key, UUID: uuid, Action: actAdd, Conn: d, Activate: d.Active != nil && *d.Active, Port: isPort(d.Controller)}
			steps = append(steps, st)
			changes = append(changes, plugin.Change{Path: path + ".state", Current: stateAbsent, Desired: statePresent})
			changes = append(changes, diff(path, cur, &Connection{}, d, true)...)
			desc := "create " + key
			if st.Activate {
				desc += " and activate it"
			}
			descs = append(descs, desc)
			continue
		}
		c := cs[0]
		if d.Type != "" && nmType(d.Type) != nmType(c.Type) {
			return nil, fmt.Errorf("%s.type: the profile is %q; NetworkManager cannot change a profile's type (delete it with state: absent under its id, and create the new one under another id)", path, c.Type)
		}
		ch := diff(path, cur, c, d, false)
		rename := ""
		if d.UUID != "" {
			// Matched by UUID: the id may differ, and is then changed.
			want, have := key, curID(keyOf(cur, c), c)
			if d.ID != "" {
				want = d.ID
			}
			if want != have {
				rename = want
				ch = append([]plugin.Change{{Path: path + ".id", Current: have, Desired: want}}, ch...)
			}
		}
		settingsChanged := len(ch) > 0
		curActive := c.Active != nil && *c.Active
		st := step{Key: key, UUID: c.UUID, Action: actNone, Rename: rename, Port: isPort(d.Controller) || (d.Controller == nil && isPort(c.Controller))}
		var verbs []string
		if settingsChanged {
			st.Action = actUpdate
			st.Conn = d
			var fields []string
			for _, x := range ch {
				fields = append(fields, strings.TrimPrefix(x.Path, path+"."))
			}
			verbs = append(verbs, "update "+key+" ("+strings.Join(fields, ", ")+")")
		}
		switch {
		case d.Active != nil && *d.Active && !curActive:
			st.Activate = true
			verbs = append(verbs, "activate "+key)
			ch = append(ch, plugin.Change{Path: path + ".active", Current: activeShown(c), Desired: true})
		case d.Active != nil && !*d.Active && (curActive || c.ActiveState != ""):
			st.Deactivate = true
			verbs = append(verbs, "deactivate "+key)
			ch = append(ch, plugin.Change{Path: path + ".active", Current: activeShown(c), Desired: false})
		case settingsChanged && curActive && (d.Active == nil || *d.Active):
			st.Activate = true // reactivate so the device takes the new settings
			verbs = append(verbs, "reactivate "+key)
		}
		if len(verbs) == 0 {
			continue
		}
		steps = append(steps, st)
		changes = append(changes, ch...)
		descs = append(descs, strings.Join(verbs, ", "))
	}
	if len(steps) == 0 {
		return nil, nil
	}
	var uuids []string
	for _, s := range steps {
		if !slices.Contains(uuids, s.UUID) {
			uuids = append(uuids, s.UUID)
		}
	}
	sort.Strings(uuids)
	return []plugin.Op{{
		ID:          TransactionID,
		Item:        itemPrefix + strings.Join(uuids, ","),
		Description: "in one NetworkManager checkpoint: " + strings.Join(descs, "; "),
		Data:        plugin.MustData(opData{Steps: steps}),
		Reversible:  true,
		Changes:     changes,
	}}, nil
}

func describeConn(key, uuid string, n int) string {
	if n > 1 {
		return key + " (" + uuid + ")"
	}
	return key
}

func isPort(ctrl *string) bool { return ctrl != nil && *ctrl != "" }

func keyOf(cur *State, c *Connection) string {
	for k, x := range cur.Connections {
		if x == c {
			return k
		}
	}
	return ""
}

func activeShown(c *Connection) any {
	if c.ActiveState != "" && c.ActiveState != "activated" {
		return c.ActiveState
	}
	if c.Active == nil {
		return false
	}
	return *c.Active
}

// normController resolves a controller given as a profile UUID to that
// profile's interface name, so "br9" and br9's UUID compare equal.
func normController(cur *State, v string) string {
	if !validUUID(v) {
		return v
	}
	for _, c := range cur.Connections {
		if c != nil && strings.EqualFold(c.UUID, v) && c.InterfaceName != nil && *c.InterfaceName != "" {
			return *c.InterfaceName
		}
	}
	return strings.ToLower(v)
}

// diff lists the fields d declares that differ from c. With all, every
// declared field is listed (a profile to create).
func diff(path string, cur *State, c, d *Connection, all bool) []plugin.Change {
	var ch []plugin.Change
	add := func(p string, current, desired any) {
		ch = append(ch, plugin.Change{Path: path + "." + p, Current: current, Desired: desired})
	}
	if all && d.Type != "" {
		add("type", nil, d.Type)
	}
	strField := func(name string, cv, dv *string, norm func(string) string) {
		if dv == nil {
			return
		}
		if norm == nil {
			norm = func(s string) string { return s }
		}
		if cv == nil {
			if all || norm(*dv) != "" {
				add(name, nil, *dv)
			}
			return
		}
		if norm(*cv) != norm(*dv) {
			add(name, *cv, *dv)
		}
	}
	strField("interface_name", c.InterfaceName, d.InterfaceName, nil)
	if d.Autoconnect != nil && (c.Autoconnect == nil || *c.Autoconnect != *d.Autoconnect) {
		add("autoconnect", ptrVal(c.Autoconnect), *d.Autoconnect)
	}
	strField("controller", c.Controller, d.Controller, func(s string) string { return normController(cur, s) })
	strField("port_type", c.PortType, d.PortType, nil)
	if d.MTU != nil && (c.MTU == nil || *c.MTU != *d.MTU) {
		add("mtu", ptrVal(c.MTU), *d.MTU)
	}
	if d.Bridge != nil && d.Bridge.STP != nil {
		var cs *bool
		if c.Bridge != nil {
			cs = c.Bridge.STP
		}
		if cs == nil || *cs != *d.Bridge.STP {
			add("bridge.stp", ptrVal(cs), *d.Bridge.STP)
		}
	}
	if d.Veth != nil && d.Veth.Peer != nil {
		var cp *string
		if c.Veth != nil {
			cp = c.Veth.Peer
		}
		strField("veth.peer", cp, d.Veth.Peer, nil)
	}
	ch = append(ch, diffIP(path+".ipv4", c.IPv4, d.IPv4, all)...)
	ch = append(ch, diffIP(path+".ipv6", c.IPv6, d.IPv6, all)...)
	return ch
}

func diffIP(path string, c, d *IP, all bool) []plugin.Change {
	if d == nil {
		return nil
	}
	if c == nil {
		c = &IP{}
	}
	var ch []plugin.Change
	add := func(p string, current, desired any) {
		ch = append(ch, plugin.Change{Path: path + "." + p, Current: current, Desired: desired})
	}
	if d.Method != "" && d.Method != c.Method {
		add("method", emptyNil(c.Method), d.Method)
	}
	if d.Addresses != nil && !slices.Equal(canonPrefixes(c.Addresses), canonPrefixes(d.Addresses)) {
		add("addresses", listOrNil(c.Addresses), d.Addresses)
	}
	if d.Gateway != nil {
		cg := ""
		if c.Gateway != nil {
			cg = *c.Gateway
		}
		if canonAddr(cg) != canonAddr(*d.Gateway) || (all && *d.Gateway != "") {
			add("gateway", emptyNil(cg), *d.Gateway)
		}
	}
	if d.DNS != nil && !slices.Equal(canonAddrs(c.DNS), canonAddrs(d.DNS)) {
		add("dns", listOrNil(c.DNS), d.DNS)
	}
	return ch
}

func canonPrefixes(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			s = p.String()
		}
		out[i] = s
	}
	return out
}

func canonAddr(s string) string {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.String()
	}
	return s
}

func canonAddrs(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = canonAddr(s)
	}
	return out
}

func ptrVal[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func emptyNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func listOrNil(l []string) any {
	if len(l) == 0 {
		return []string{}
	}
	return l
}

// Subset implements plugin.Plugin. Items are the transaction's
// "connections:UUID,..." (or "connections/KEY" for one profile by key).
// A touched profile that existed before is restored with every managed
// field it had (including whether it was active); one that did not exist
// (created by the transaction) is declared absent by its UUID, so rollback
// deletes it and nothing else.
func (p *Plugin) Subset(st any, items []string) any {
	return subset(st, items)
}

func subset(st any, items []string) *State {
	s, _ := st.(*State)
	out := &State{Connections: map[string]*Connection{}}
	if s == nil {
		s = &State{}
	}
	restore := func(key string, c *Connection) {
		cp := &Connection{
			State: statePresent, ID: c.ID, UUID: c.UUID, Type: c.Type,
			InterfaceName: c.InterfaceName, Autoconnect: c.Autoconnect, Active: c.Active,
			Controller: c.Controller, PortType: c.PortType, MTU: c.MTU,
			IPv4: c.IPv4, IPv6: c.IPv6, Bridge: c.Bridge, Veth: c.Veth,
		}
		out.Connections[key] = cp
	}
	for _, it := range items {
		switch {
		case strings.HasPrefix(it, itemPrefix):
			for _, uuid := range strings.Split(strings.TrimPrefix(it, itemPrefix), ",") {
				if uuid == "" {
					continue
				}
				found := false
				for _, k := range slices.Sorted(maps.Keys(s.Connections)) {
					if c := s.Connections[k]; c != nil && strings.EqualFold(c.UUID, uuid) {
						restore(k, c)
						found = true
					}
				}
				if !found {
					out.Connections[uuid] = &Connection{State: stateAbsent, UUID: uuid}
				}
			}
		case strings.HasPrefix(it, "connections/"):
			key := strings.TrimPrefix(it, "connections/")
			if c := s.Connections[key]; c != nil {
				restore(key, c)
			} else {
				out.Connections[key] = &Connection{State: stateAbsent}
			}
		}
	}
	return out
}
