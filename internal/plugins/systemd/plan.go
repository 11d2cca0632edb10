package systemd

import (
	"fmt"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"maps"
	"slices"
)

// Op kinds, in Op.Data.
const (
	kindUnmask  = "unmask"
	kindEnable  = "enable"
	kindDisable = "disable"
	kindMask    = "mask"
	kindReload  = "daemon-reload"
	kindStart   = "start"
	kindStop    = "stop"
	kindRestart = "restart"
)

// opData is the machine form of a systemd op.
type opData struct {
	Kind string `json:"kind"`
	Unit string `json:"unit,omitempty"`
}

const reloadID = "systemd/daemon-reload"

// Plan implements plugin.Plugin. Per unit the order is unmask, enable or
// disable, mask; then one daemon reload if any unit file changed; then
// start, stop and restart jobs, which are independent of each other and run
// concurrently.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	cur, _ := current.(*State)
	des, _ := desired.(*State)
	if des == nil || len(des.Units) == 0 {
		return nil, nil
	}
	if cur == nil {
		cur = &State{}
	}
	names := slices.Sorted(maps.Keys(des.Units))

	var fileOps, jobOps []plugin.Op
	needReload := false
	for _, name := range names {
		d := des.Units[name]
		if d == nil {
			continue
		}
		c := cur.Units[name]
		if c == nil {
			// Not loaded and no unit file: plan what is asked; apply will
			// report that the unit does not exist.
			c = &Unit{ActiveState: "inactive"}
		}
		item := "units/" + name
		path := fmt.Sprintf("units[%q]", name)
		var prev string
		add := func(kind, desc string, ch plugin.Change) {
			op := plugin.Op{
				ID:          "systemd/" + kind + "/" + name,
				Item:        item,
				Description: desc,
				Data:        plugin.MustData(opData{Kind: kind, Unit: name}),
				Reversible:  true,
				Changes:     []plugin.Change{ch},
			}
			if prev != "" {
				op.DependsOn = []string{prev}
			}
			prev = op.ID
			fileOps = append(fileOps, op)
		}
		curMasked := c.Masked != nil && *c.Masked
		if d.Masked != nil && !*d.Masked && curMasked {
			add(kindUnmask, "unmask "+name, plugin.Change{Path: path + ".masked", Current: true, Desired: false})
			curMasked = false
		}
		if d.Enabled != nil && !curMasked {
			if c.Enabled == nil || *c.Enabled != *d.Enabled {
				kind, verb := kindDisable, "disable "
				if *d.Enabled {
					kind, verb = kindEnable, "enable "
				}
				add(kind, verb+name, plugin.Change{Path: path + ".enabled", Current: boolOrNil(c.Enabled, c.UnitFileState), Desired: *d.Enabled})
			}
		}
		if d.Masked != nil && *d.Masked && !curMasked {
			add(kindMask, "mask "+name, plugin.Change{Path: path + ".masked", Current: false, Desired: true})
		}
		if c.NeedDaemonReload && d.ActiveState == "active" {
			needReload = true
		}

		kind, desc := "", ""
		switch {
		case d.ActiveState == "active" && c.ActiveState != "active":
			kind, desc = kindStart, "start "+name
		case d.ActiveState == "inactive" && c.ActiveState == "active":
			kind, desc = kindStop, "stop "+name
		case d.ActiveState == "active" && c.NeedDaemonReload:
			kind, desc = kindRestart, "restart "+name+" (its unit file changed on disk)"
		}
		if kind != "" {
			job := plugin.Op{
				ID:          "systemd/" + kind + "/" + name,
				Item:        item,
				Description: desc,
				Data:        plugin.MustData(opData{Kind: kind, Unit: name}),
				// A restart cannot be taken back; start and stop can.
				Reversible: kind != kindRestart,
				Changes:    []plugin.Change{{Path: path + ".active_state", Current: activeShown(c), Desired: d.ActiveState}},
			}
			if prev != "" {
				job.DependsOn = []string{prev}
			}
			jobOps = append(jobOps, job)
		}
	}
	if len(fileOps) > 0 {
		needReload = true
	}
	ops := fileOps
	if needReload {
		reload := plugin.Op{
			ID:          reloadID,
			Item:        "manager",
			Description: "reload systemd manager configuration (daemon-reload)",
			Data:        plugin.MustData(opData{Kind: kindReload}),
			Reversible:  true,
		}
		for _, op := range fileOps {
			reload.DependsOn = append(reload.DependsOn, op.ID)
		}
		ops = append(ops, reload)
		for i := range jobOps {
			// The reload already waits for this unit's file ops.
			jobOps[i].DependsOn = []string{reloadID}
		}
	}
	return append(ops, jobOps...), nil
}

func activeShown(c *Unit) string {
	if c.RawActiveState != "" && c.RawActiveState != c.ActiveState {
		return c.ActiveState + " (" + c.RawActiveState + ")"
	}
	return c.ActiveState
}

func boolOrNil(b *bool, fileState string) any {
	if b != nil {
		return *b
	}
	if fileState != "" {
		return fileState
	}
	return nil
}

// Subset implements plugin.Plugin: the units among items ("units/NAME").
func (p *Plugin) Subset(st any, items []string) any {
	s, _ := st.(*State)
	out := &State{Units: map[string]*Unit{}}
	if s == nil {
		return out
	}
	for _, it := range items {
		if len(it) > 6 && it[:6] == "units/" {
			name := it[6:]
			if u, ok := s.Units[name]; ok && u != nil {
				cp := *u
				// Restore only what can be declared; a unit that was
				// failed before is restored as inactive.
				out.Units[name] = &Unit{ActiveState: cp.ActiveState, Enabled: cp.Enabled, Masked: cp.Masked}
			}
		}
	}
	return out
}
