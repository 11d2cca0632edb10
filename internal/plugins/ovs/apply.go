package ovs

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ovn-kubernetes/libovsdb/ovsdb"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Apply implements plugin.Plugin: the op's actions become one OVSDB
// transaction (all or nothing). Row UUIDs are resolved from a fresh read;
// every existing row the transaction changes is guarded by a "wait" so a
// concurrent delete aborts it instead of half-applying. When ovs-vswitchd
// serves the database, Apply waits until it has carried the change out
// (next_cfg/cur_cfg, as ovs-vsctl does) and reports an interface it could
// not set up (Interface.error) as a failure.
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	if op.ID != OpID {
		return fmt.Errorf("ovs: unknown op %q", op.ID)
	}
	tx, err := decodeTx(op.Data)
	if err != nil {
		return err
	}
	if len(tx.Actions) == 0 {
		return nil
	}
	snap, err := p.read(ctx)
	if err != nil {
		return err
	}
	b, err := build(snap, tx.Actions)
	if err != nil {
		return err
	}
	cli, err := p.connect(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	res, err := cli.Transact(cctx, b.ops...)
	cancel()
	if err != nil {
		return fmt.Errorf("OVSDB transaction at %s: %w (it may or may not have been committed; query to see)", p.addr, err)
	}
	if err := b.check(res); err != nil {
		return err
	}
	if b.cfgIndex < 0 {
		return nil
	}
	target := -1
	if r := res[b.cfgIndex]; len(r.Rows) == 1 {
		if n, ok := r.Rows[0]["next_cfg"].(float64); ok {
			target = int(n)
		}
	}
	if target < 0 {
		return fmt.Errorf("OVSDB transaction at %s committed, but its next_cfg could not be read back", p.addr)
	}
	return p.waitVswitchd(ctx, target, b.touched)
}

// builder turns actions into OVSDB operations and remembers which action
// each operation came from, for error messages.
type builder struct {
	snap        *snapshot
	ops         []ovsdb.Operation
	what        []string // per op: what it does, for people
	where       []string // per op: the state path it serves
	named       int
	touched     map[string]string // interface name → state path, to check after vswitchd ran
	cfgIndex    int               // index of the select of next_cfg, -1 when not waiting
	portByName  map[string]*portRow
	ifaceByName map[string]*ifaceRow
}

func build(snap *snapshot, actions []action) (*builder, error) {
	b := &builder{snap: snap, touched: map[string]string{}, cfgIndex: -1,
		portByName: map[string]*portRow{}, ifaceByName: map[string]*ifaceRow{}}
	for _, pr := range snap.ports {
		b.portByName[pr.Name] = pr
	}
	for _, ir := range snap.ifaces {
		b.ifaceByName[ir.Name] = ir
	}
	for _, a := range actions {
		if err := b.action(a); err != nil {
			return nil, err
		}
	}
	if len(b.ops) == 0 {
		return b, nil
	}
	if snap.root != nil && len(snap.root.IfaceTypes) > 0 {
		// ovs-vswitchd has run against this database (it fills
		// iface_types): ask it to report when it has caught up.
		one := 1
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tRoot, Where: b.rootWhere(),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("next_cfg", ovsdb.MutateOperationAdd, one)}},
			"bump next_cfg so ovs-vswitchd reports when it is done", "")
		b.cfgIndex = len(b.ops)
		b.add(ovsdb.Operation{Op: ovsdb.OperationSelect, Table: tRoot, Where: b.rootWhere(), Columns: []string{"next_cfg"}},
			"read next_cfg", "")
	}
	return b, nil
}

func (b *builder) add(op ovsdb.Operation, what, path string) {
	b.ops = append(b.ops, op)
	b.what = append(b.what, what)
	b.where = append(b.where, path)
}

// name returns a fresh named-uuid. RFC 7047 wants [_a-zA-Z][_a-zA-Z0-9]*
// and libovsdb passes any non-UUID string through unchecked, so names are
// generated, never taken from user input.
func (b *builder) name(kind string) string {
	b.named++
	return fmt.Sprintf("%s%d", kind, b.named)
}

func (b *builder) rootWhere() []ovsdb.Condition {
	return []ovsdb.Condition{ovsdb.NewCondition("_uuid", ovsdb.ConditionEqual, ovsdb.UUID{GoUUID: b.snap.root.UUID})}
}

func byName(name string) []ovsdb.Condition {
	return []ovsdb.Condition{ovsdb.NewCondition("name", ovsdb.ConditionEqual, name)}
}

// exists adds a wait that aborts the transaction unless table has a row
// named name.
func (b *builder) exists(table, name, path string) {
	zero := 0
	b.add(ovsdb.Operation{Op: ovsdb.OperationWait, Table: table, Where: byName(name), Columns: []string{"name"},
		Until: string(ovsdb.WaitConditionEqual), Rows: []ovsdb.Row{{"name": name}}, Timeout: &zero},
		fmt.Sprintf("check that %s %s still exists", strings.ToLower(table), name), path)
}

func uuidSet(names ...string) ovsdb.OvsSet {
	s := ovsdb.OvsSet{GoSet: []any{}}
	for _, n := range names {
		s.GoSet = append(s.GoSet, ovsdb.UUID{GoUUID: n})
	}
	return s
}

func strMap(m map[string]string) ovsdb.OvsMap {
	out := ovsdb.OvsMap{GoMap: map[any]any{}}
	for k, v := range m {
		out.GoMap[k] = v
	}
	return out
}

func optSet(v *int) ovsdb.OvsSet {
	if v == nil {
		return ovsdb.OvsSet{GoSet: []any{}}
	}
	return ovsdb.OvsSet{GoSet: []any{*v}}
}

func intSet(v []int) ovsdb.OvsSet {
	s := ovsdb.OvsSet{GoSet: []any{}}
	for _, x := range v {
		s.GoSet = append(s.GoSet, x)
	}
	return s
}

// dbType writes "system" as OVS's canonical empty type.
func dbType(t string) string {
	if t == "system" {
		return ""
	}
	return t
}

func (b *builder) action(a action) error {
	path := a.path()
	switch a.Kind {
	case addBridge:
		if b.snap.root == nil {
			return fmt.Errorf("%s: the database has no Open_vSwitch row to add the bridge to (initialize it: ovs-vsctl init)", path)
		}
		spec := a.BridgeSet
		var portNames []string
		for _, pn := range slices.Sorted(maps.Keys(spec.Ports)) {
			n, err := b.insertPort(a.Bridge, pn, spec.Ports[pn])
			if err != nil {
				return err
			}
			portNames = append(portNames, n)
		}
		row := ovsdb.Row{"name": a.Bridge, "ports": uuidSet(portNames...)}
		if spec.DatapathType != "" {
			row["datapath_type"] = dbType(spec.DatapathType)
		}
		if spec.FailMode != "" {
			row["fail_mode"] = ovsdb.OvsSet{GoSet: []any{spec.FailMode}}
		}
		if spec.ExternalIDs != nil {
			row["external_ids"] = strMap(spec.ExternalIDs)
		}
		if spec.OtherConfig != nil {
			row["other_config"] = strMap(spec.OtherConfig)
		}
		bn := b.name("bridge")
		b.add(ovsdb.Operation{Op: ovsdb.OperationInsert, Table: tBridge, Row: row, UUIDName: bn}, "insert Bridge "+a.Bridge, path)
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tRoot, Where: b.rootWhere(),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("bridges", ovsdb.MutateOperationInsert, uuidSet(bn))}},
			"add bridge "+a.Bridge+" to Open_vSwitch.bridges", path)
	case delBridge:
		br := b.snap.bridges[a.Bridge]
		if br == nil || b.snap.root == nil {
			return nil // already gone
		}
		// Bridge, Port and Interface are not root tables: dropping the
		// reference deletes the bridge with its ports and interfaces.
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tRoot, Where: b.rootWhere(),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("bridges", ovsdb.MutateOperationDelete, ovsdb.OvsSet{GoSet: []any{ovsdb.UUID{GoUUID: br.UUID}}})}},
			"remove bridge "+a.Bridge+" from Open_vSwitch.bridges", path)
	case setBridge:
		s := a.BridgeSet
		row := ovsdb.Row{}
		if s.DatapathType != "" {
			row["datapath_type"] = dbType(s.DatapathType)
		}
		if s.FailMode != "" {
			row["fail_mode"] = ovsdb.OvsSet{GoSet: []any{s.FailMode}}
		}
		if s.ExternalIDs != nil {
			row["external_ids"] = strMap(s.ExternalIDs)
		}
		if s.OtherConfig != nil {
			row["other_config"] = strMap(s.OtherConfig)
		}
		if len(row) == 0 {
			return nil
		}
		b.exists(tBridge, a.Bridge, path)
		b.add(ovsdb.Operation{Op: ovsdb.OperationUpdate, Table: tBridge, Where: byName(a.Bridge), Row: row}, "update Bridge "+a.Bridge, path)
	case addPort:
		b.exists(tBridge, a.Bridge, bridgePath(a.Bridge))
		pn, err := b.insertPort(a.Bridge, a.Port, a.PortSet)
		if err != nil {
			return err
		}
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tBridge, Where: byName(a.Bridge),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("ports", ovsdb.MutateOperationInsert, uuidSet(pn))}},
			fmt.Sprintf("add port %s to Bridge %s", a.Port, a.Bridge), path)
	case delPort:
		pr := b.portByName[a.Port]
		if pr == nil || b.snap.bridges[a.Bridge] == nil {
			return nil // already gone
		}
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tBridge, Where: byName(a.Bridge),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("ports", ovsdb.MutateOperationDelete, ovsdb.OvsSet{GoSet: []any{ovsdb.UUID{GoUUID: pr.UUID}}})}},
			fmt.Sprintf("remove port %s from Bridge %s", a.Port, a.Bridge), path)
	case setPort:
		s := a.PortSet
		row := ovsdb.Row{}
		if s.Tag != nil {
			v, _, err := optInt(s.Tag)
			if err != nil {
				return fmt.Errorf("%s.tag: %w", path, err)
			}
			row["tag"] = optSet(v)
		}
		if s.Trunks != nil {
			row["trunks"] = intSet(s.Trunks)
		}
		if s.ExternalIDs != nil {
			row["external_ids"] = strMap(s.ExternalIDs)
		}
		if len(row) == 0 {
			return nil
		}
		b.exists(tPort, a.Port, path)
		b.add(ovsdb.Operation{Op: ovsdb.OperationUpdate, Table: tPort, Where: byName(a.Port), Row: row}, "update Port "+a.Port, path)
	case addIface:
		b.exists(tPort, a.Port, portPath(a.Bridge, a.Port))
		in, err := b.insertIface(a.Bridge, a.Port, a.Interface, a.IfaceSet)
		if err != nil {
			return err
		}
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tPort, Where: byName(a.Port),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("interfaces", ovsdb.MutateOperationInsert, uuidSet(in))}},
			fmt.Sprintf("add interface %s to Port %s", a.Interface, a.Port), path)
	case delIface:
		ir := b.ifaceByName[a.Interface]
		if ir == nil || b.portByName[a.Port] == nil {
			return nil
		}
		b.add(ovsdb.Operation{Op: ovsdb.OperationMutate, Table: tPort, Where: byName(a.Port),
			Mutations: []ovsdb.Mutation{*ovsdb.NewMutation("interfaces", ovsdb.MutateOperationDelete, ovsdb.OvsSet{GoSet: []any{ovsdb.UUID{GoUUID: ir.UUID}}})}},
			fmt.Sprintf("remove interface %s from Port %s", a.Interface, a.Port), path)
	case setIface:
		row, err := ifaceColumns(a.IfaceSet, path)
		if err != nil {
			return err
		}
		if len(row) == 0 {
			return nil
		}
		if _, ok := row["type"]; ok {
			b.touched[a.Interface] = path
		} else if _, ok := row["options"]; ok {
			b.touched[a.Interface] = path
		}
		b.exists(tIface, a.Interface, path)
		b.add(ovsdb.Operation{Op: ovsdb.OperationUpdate, Table: tIface, Where: byName(a.Interface), Row: row}, "update Interface "+a.Interface, path)
	default:
		return fmt.Errorf("ovs: unknown action %q", a.Kind)
	}
	return nil
}

func ifaceColumns(s *Interface, path string) (ovsdb.Row, error) {
	row := ovsdb.Row{}
	if s.Type != "" {
		row["type"] = dbType(s.Type)
	}
	if s.Options != nil {
		row["options"] = strMap(s.Options)
	}
	if s.MTURequest != nil {
		v, _, err := optInt(s.MTURequest)
		if err != nil {
			return nil, fmt.Errorf("%s.mtu_request: %w", path, err)
		}
		row["mtu_request"] = optSet(v)
	}
	if s.ExternalIDs != nil {
		row["external_ids"] = strMap(s.ExternalIDs)
	}
	return row, nil
}

// insertPort inserts a Port with its Interfaces and returns its named-uuid.
func (b *builder) insertPort(bridge, port string, spec *Port) (string, error) {
	path := portPath(bridge, port)
	var ifaces []string
	for _, in := range slices.Sorted(maps.Keys(spec.Interfaces)) {
		n, err := b.insertIface(bridge, port, in, spec.Interfaces[in])
		if err != nil {
			return "", err
		}
		ifaces = append(ifaces, n)
	}
	row := ovsdb.Row{"name": port, "interfaces": uuidSet(ifaces...)}
	if spec.Tag != nil {
		v, _, err := optInt(spec.Tag)
		if err != nil {
			return "", fmt.Errorf("%s.tag: %w", path, err)
		}
		row["tag"] = optSet(v)
	}
	if spec.Trunks != nil {
		row["trunks"] = intSet(spec.Trunks)
	}
	if spec.ExternalIDs != nil {
		row["external_ids"] = strMap(spec.ExternalIDs)
	}
	n := b.name("port")
	b.add(ovsdb.Operation{Op: ovsdb.OperationInsert, Table: tPort, Row: row, UUIDName: n}, "insert Port "+port, path)
	return n, nil
}

func (b *builder) insertIface(bridge, port, iface string, spec *Interface) (string, error) {
	path := ifacePath(bridge, port, iface)
	if spec == nil {
		spec = &Interface{}
	}
	row, err := ifaceColumns(spec, path)
	if err != nil {
		return "", err
	}
	row["name"] = iface
	n := b.name("iface")
	b.add(ovsdb.Operation{Op: ovsdb.OperationInsert, Table: tIface, Row: row, UUIDName: n}, "insert Interface "+iface, path)
	b.touched[iface] = path
	return n, nil
}

// check reads the per-operation results. ovsdb-server runs operations in
// order and stops at the first failure, rolling the whole transaction
// back; a result beyond the operations reports a failed commit.
func (b *builder) check(res []ovsdb.OperationResult) error {
	for i, r := range res {
		if r.Error == "" {
			continue
		}
		if i >= len(b.ops) {
			// Constraints (unique names, references, set sizes) are
			// checked at commit, so the error is not tied to an
			// operation; name the one that inserted the offending row.
			if j := b.culprit(r.Details); j >= 0 {
				return fmt.Errorf("%s: OVSDB transaction not committed, nothing was changed: operation %d of %d (%s): %s", b.where[j], j+1, len(b.ops), b.what[j], describeResult(r))
			}
			return fmt.Errorf("OVSDB transaction not committed, nothing was changed: %s", describeResult(r))
		}
		where := ""
		if b.where[i] != "" {
			where = b.where[i] + ": "
		}
		msg := describeResult(r)
		if b.ops[i].Op == ovsdb.OperationWait {
			msg = "it no longer exists (changed by someone else since the plan; plan again)"
		}
		return fmt.Errorf("%sOVSDB transaction failed, nothing was changed: operation %d of %d (%s): %s", where, i+1, len(b.ops), b.what[i], msg)
	}
	if len(res) < len(b.ops) {
		return fmt.Errorf("OVSDB transaction: %d results for %d operations (treat as not committed; query to see)", len(res), len(b.ops))
	}
	return nil
}

// indexClash matches ovsdb-server's unique index violation.
var indexClash = regexp.MustCompile(`rows in "(\w+)" table to have identical values \((.*?)\) for index`)

// culprit finds the insert an index violation is about, -1 if none.
func (b *builder) culprit(details string) int {
	m := indexClash.FindStringSubmatch(details)
	if m == nil {
		return -1
	}
	for i, op := range b.ops {
		if op.Op == ovsdb.OperationInsert && op.Table == m[1] {
			if name, _ := op.Row["name"].(string); name == m[2] || strconv.Quote(name) == m[2] {
				return i
			}
		}
	}
	return -1
}

func describeResult(r ovsdb.OperationResult) string {
	if r.Details == "" {
		return r.Error
	}
	return r.Error + ": " + r.Details
}

// waitVswitchd waits until ovs-vswitchd has caught up with next_cfg
// target, then reports any touched interface it could not set up.
func (p *Plugin) waitVswitchd(ctx context.Context, target int, touched map[string]string) error {
	cli, err := p.connect(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, VswitchdTimeout)
	defer cancel()
	ops := []ovsdb.Operation{{Op: ovsdb.OperationSelect, Table: tRoot, Columns: []string{"cur_cfg"}}}
	if len(touched) > 0 {
		ops = append(ops, ovsdb.Operation{Op: ovsdb.OperationSelect, Table: tIface, Columns: []string{"name", "error"}})
	}
	delay := 5 * time.Millisecond
	for {
		res, err := cli.Transact(ctx, ops...)
		if err == nil && len(res) == len(ops) && len(res[0].Rows) == 1 {
			if cur, ok := res[0].Rows[0]["cur_cfg"].(float64); ok && int(cur) >= target {
				return ifaceErrors(res, touched)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("OVSDB transaction at %s committed, but ovs-vswitchd did not carry it out within %s (is ovs-vswitchd running? see its log)", p.addr, VswitchdTimeout)
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay *= 2
		}
	}
}

// ifaceErrors turns Interface.error of touched interfaces into an error.
func ifaceErrors(res []ovsdb.OperationResult, touched map[string]string) error {
	if len(res) < 2 {
		return nil
	}
	var msgs []string
	for _, row := range res[1].Rows {
		name, _ := row["name"].(string)
		path, ok := touched[name]
		if !ok {
			continue
		}
		if e := setString(row["error"]); e != "" {
			msgs = append(msgs, fmt.Sprintf("%s: ovs-vswitchd: %s", path, e))
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	sort.Strings(msgs)
	return fmt.Errorf("OVSDB transaction committed, but %s", strings.Join(msgs, "; "))
}

// setString reads an optional string column from a raw row: a plain
// string or a set of zero or one.
func setString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case ovsdb.OvsSet:
		if len(x.GoSet) == 1 {
			s, _ := x.GoSet[0].(string)
			return s
		}
	}
	return ""
}
