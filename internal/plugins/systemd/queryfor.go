package systemd

import (
	"context"
	"fmt"
	"sort"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
)

// QueryFor implements plugin.Scoped: only the units desired names. One
// ListUnitsByNames loads them; then each unit's UnitFileState and
// NeedDaemonReload properties are read, pipelined over the connection.
//
// Both costly alternatives are avoided: ListUnitFiles makes systemd read
// every unit file on disk (~100 ms on a small host), and GetUnitFileState
// rebuilds the search paths on every call (~1.4 ms each). The unit's
// UnitFileState property is cached by systemd and invalidated by
// enable/disable/mask/unmask and reload, so it is as fresh as either.
func (p *Plugin) QueryFor(ctx context.Context, desired any) (any, error) {
	des, _ := desired.(*State)
	st := &State{Units: map[string]*Unit{}}
	if des == nil || len(des.Units) == 0 {
		return st, nil
	}
	conn, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	m := conn.Object(busName, objPath)
	var names, templates []string
	for n := range des.Units {
		// Templates cannot be loaded, so ListUnitsByNames refuses them.
		if IsTemplate(n) {
			templates = append(templates, n)
		} else {
			names = append(names, n)
		}
	}
	sort.Strings(names)

	ctx, cancel := dbusx.WithTimeout(ctx)
	defer cancel()
	tmplCalls := map[string]*dbus.Call{}
	for _, n := range templates {
		tmplCalls[n] = m.GoWithContext(ctx, managerIfc+".GetUnitFileState", 0, make(chan *dbus.Call, 1), n)
	}
	var units []unitStatus
	if len(names) > 0 {
		if err := dbusx.Call(ctx, m, managerIfc+".ListUnitsByNames", []any{&units}, names); err != nil {
			return nil, fmt.Errorf("systemd: %w", err)
		}
	}
	type pending struct {
		us             unitStatus
		file, needLoad *dbus.Call
	}
	var ps []pending
	for _, us := range units {
		if us.LoadState == "not-found" || us.LoadState == "" {
			continue // no such unit, as Query would not list it
		}
		obj := conn.Object(busName, us.Path)
		ps = append(ps, pending{
			us:       us,
			file:     obj.GoWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, make(chan *dbus.Call, 1), unitIfc, "UnitFileState"),
			needLoad: obj.GoWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, make(chan *dbus.Call, 1), unitIfc, "NeedDaemonReload"),
		})
	}
	for _, pd := range ps {
		fileState := variantString(<-pd.file.Done)
		need := variantBool(<-pd.needLoad.Done)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("systemd: reading unit properties: %w", ctx.Err())
		}
		u := &Unit{}
		if fileState != "" {
			u.UnitFileState = fileState
			setFileState(u, fileState)
			u.NeedDaemonReload = need
		} else if pd.us.LoadState == "masked" {
			u.UnitFileState = "masked"
			setFileState(u, "masked")
		}
		u.RawActiveState, u.SubState = pd.us.ActiveState, pd.us.SubState
		u.ActiveState = normalizeActive(pd.us.ActiveState)
		st.Units[pd.us.Name] = u
	}
	for n, c := range tmplCalls {
		<-c.Done
		var fs string
		if c.Err == nil && c.Store(&fs) == nil && fs != "" {
			u := &Unit{UnitFileState: fs}
			setFileState(u, fs)
			st.Units[n] = u
		}
	}
	return st, nil
}

func variantString(c *dbus.Call) string {
	var v dbus.Variant
	if c.Err != nil || c.Store(&v) != nil {
		return ""
	}
	s, _ := v.Value().(string)
	return s
}

func variantBool(c *dbus.Call) bool {
	var v dbus.Variant
	if c.Err != nil || c.Store(&v) != nil {
		return false
	}
	b, _ := v.Value().(bool)
	return b
}
