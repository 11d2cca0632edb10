package dbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	godbus "github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

// methodSet is the op's method for a writable property.
const methodSet = ifaceProperties + ".Set"

// opData is an op's machine form. Apply re-derives how to set the property
// from the introspection and the loaded mappings; Method is for people and
// is checked to agree, never trusted.
type opData struct {
	Bus       string          `json:"bus,omitempty"`
	Service   string          `json:"service"`
	Path      string          `json:"path"`
	Interface string          `json:"interface"`
	Property  string          `json:"property"`
	Signature string          `json:"signature"`
	Value     json.RawMessage `json:"value"`
	Method    string          `json:"method"`
}

// setter is how one property is set.
type setter struct {
	method string       // methodSet, or the mapped method's name
	pm     *propMapping // nil for Properties.Set
	lits   []any        // converted literal args of the mapping
}

// setterFor decides how a property is set, or why it cannot be. path names
// the property in messages.
func (p *Plugin) setterFor(path string, o Object, ii *ifaceInfo, name string) (*propInfo, *setter, error) {
	pi := ii.Properties[name]
	if pi == nil {
		if why, ok := ii.Invalid[name]; ok {
			return nil, nil, fmt.Errorf("%s: %s declares property %s unusably in its introspection (%s)", path, o.Service, name, why)
		}
		return nil, nil, fmt.Errorf("%s: interface %s of %s %s has no property %s (its properties: %s)", path, o.Interface, o.Service, o.Path, name, names(ii.Properties))
	}
	if !pi.Read {
		return nil, nil, fmt.Errorf("%s: property %s is write-only, so op-dbus cannot read it to plan or verify", path, name)
	}
	if pi.Write {
		return pi, &setter{method: methodSet}, nil
	}
	pm := p.mappings.lookup(o.Service, o.Interface, name)
	if pm == nil {
		return nil, nil, fmt.Errorf("%s: property %s of %s is read-only and no mapping sets it (a mapping names the setter method of %s; put one in the directory %s names, see the dbus plugin README)", path, name, o.Service, o.Interface, MappingsEnv)
	}
	_, lits, err := pm.resolve(ii, pi)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return pi, &setter{method: pm.Method, pm: pm, lits: lits}, nil
}

type ifaceKey struct {
	obj   objKey
	iface string
}

// Plan implements plugin.Plugin. It needs the introspection QueryFor read
// (carried by current); it does no I/O. Every named property is checked
// (type, readability, a way to set it) whether or not it differs, so a
// document that cannot be applied fails at plan time on any host.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	des, _ := desired.(*State)
	cur, _ := current.(*State)
	if des == nil {
		return nil, nil
	}
	curProps := map[ifaceKey]map[string]json.RawMessage{}
	if cur != nil {
		for _, o := range cur.Objects {
			k := ifaceKey{keyOf(o), o.Interface}
			if curProps[k] == nil {
				curProps[k] = map[string]json.RawMessage{}
			}
			for n, v := range o.Properties {
				curProps[k][n] = v
			}
		}
	}
	var ops []plugin.Op
	var errs []error
	last := map[[2]string]string{} // (bus, service) → previous op ID
	for i, o := range des.Objects {
		k := keyOf(o)
		in := p.introFor(cur, k)
		if in == nil {
			errs = append(errs, fmt.Errorf("objects[%d]: %s %s was not read from the bus before planning", i, o.Service, o.Path))
			continue
		}
		ii := in.Interfaces[o.Interface]
		if ii == nil {
			errs = append(errs, fmt.Errorf("objects[%d].interface: %s %s has no interface %s (its interfaces: %s)", i, o.Service, o.Path, o.Interface, names(in.Interfaces)))
			continue
		}
		cp := curProps[ifaceKey{k, o.Interface}]
		for _, name := range slices.Sorted(maps.Keys(o.Properties)) {
			path := propPath(i, name)
			pi, set, err := p.setterFor(path, o, ii, name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			want, err := fromJSONRaw(pi.Type, o.Properties[name], path)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			curRaw, ok := cp[name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: %s did not report the property's value", path, o.Service))
				continue
			}
			have, err := fromJSONRaw(pi.Type, curRaw, path)
			if err != nil {
				errs = append(errs, fmt.Errorf("current value: %w", err))
				continue
			}
			wc, err1 := canonical(pi.Type, want)
			hc, err2 := canonical(pi.Type, have)
			if err := errors.Join(err1, err2); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			if wc == hc {
				continue
			}
			wj, _ := toJSON(pi.Type, want, path, true)
			hj, _ := toJSON(pi.Type, have, path, true)
			wb, _ := json.Marshal(wj)
			item := Item(o, name)
			op := plugin.Op{
				ID:          "dbus/set/" + item,
				Item:        item,
				Description: describeOp(o, name, string(wb), set),
				Data: plugin.MustData(opData{
					Bus: o.Bus, Service: o.Service, Path: o.Path, Interface: o.Interface,
					Property: name, Signature: pi.Type.str, Value: wb, Method: set.method,
				}),
				Reversible: true,
				Changes:    []plugin.Change{{Path: path, Current: hj, Desired: wj}},
			}
			// One service's ops run one after another, in document order.
			sk := [2]string{k.bus, k.service}
			if prev := last[sk]; prev != "" {
				op.DependsOn = []string{prev}
			}
			last[sk] = op.ID
			ops = append(ops, op)
		}
	}
	if len(errs) > 0 {
		return nil, joinLine(errs)
	}
	return ops, nil
}

func describeOp(o Object, name, value string, set *setter) string {
	if len(value) > 60 {
		value = value[:57] + "..."
	}
	how := "Properties.Set"
	if set.pm != nil {
		how = set.method
	}
	return fmt.Sprintf("set %s to %s (%s)", subject(o, name), value, how)
}

// subject names a property for people, short in the common case where the
// interface is named like the service and the path follows from it:
// "Location of org.freedesktop.hostname1".
func subject(o Object, name string) string {
	prop := name
	if o.Interface != o.Service {
		prop = o.Interface + "." + name
	}
	on := o.Service
	if o.Path != "/"+strings.ReplaceAll(o.Service, ".", "/") {
		on += " " + o.Path
	}
	if b := busOf(o); b != "system" {
		on += " on " + dbusx.Bus(b).String()
	}
	return prop + " of " + on
}

// joinLine joins errors on one line, as the CLI shows one-line errors.
func joinLine(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return errors.New(strings.Join(parts, "; "))
}

// Apply implements plugin.Plugin: Properties.Set for a writable property,
// else the mapped setter, decided again from the introspection and the
// loaded mappings (the op's data cannot choose a method).
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	var d opData
	dec := json.NewDecoder(bytes.NewReader(op.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	o := Object{Bus: d.Bus, Service: d.Service, Path: d.Path, Interface: d.Interface}
	if ps := validate(&State{Objects: []Object{o}}); len(ps) > 0 {
		return fmt.Errorf("bad op data: %v", ps)
	}
	if err := ValidMemberName(d.Property); err != nil {
		return fmt.Errorf("bad op data: property %q: %v", d.Property, err)
	}
	k := keyOf(o)
	conn, err := p.conn(ctx, k.bus)
	if err != nil {
		return err
	}
	in := p.introFor(nil, k)
	if in == nil {
		if in, err = p.introspect(ctx, conn, k); err != nil {
			return err
		}
		p.mu.Lock()
		p.intro[k] = in
		p.mu.Unlock()
	}
	ii := in.Interfaces[o.Interface]
	if ii == nil {
		return fmt.Errorf("%s %s has no interface %s", o.Service, o.Path, o.Interface)
	}
	pi, set, err := p.setterFor("property "+d.Property, o, ii, d.Property)
	if err != nil {
		return err
	}
	if pi.Type.str != d.Signature || set.method != d.Method {
		return fmt.Errorf("%s: planned as type %s via %s, now type %s via %s: the service or the mappings changed since the plan; plan again", subject(o, d.Property), d.Signature, d.Method, pi.Type.str, set.method)
	}
	value, err := fromJSONRaw(pi.Type, d.Value, "value of "+d.Property)
	if err != nil {
		return err
	}
	obj := conn.Object(o.Service, godbus.ObjectPath(o.Path))
	cctx, cancel := p.ctx(ctx)
	defer cancel()
	what := "set " + subject(o, d.Property)
	if set.pm == nil {
		sig, err := godbus.ParseSignature(pi.Type.str)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if err := dbusx.Call(cctx, obj, methodSet, nil, o.Interface, d.Property, godbus.MakeVariantWithSignature(value, sig)); err != nil {
			return fmt.Errorf("%s: %w%s", what, err, p.callHint(err))
		}
		return nil
	}
	args := set.pm.call(set.lits, value)
	if err := dbusx.Call(cctx, obj, o.Interface+"."+set.pm.Method, nil, args...); err != nil {
		return fmt.Errorf("%s with %s (mapping %s): %w%s", what, set.pm.Method, set.pm.File, err, p.callHint(err))
	}
	return nil
}

func (p *Plugin) callHint(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf(" (the service did not answer within %s)", p.timeout)
	}
	h := hint(err)
	if name := dbusx.ErrorName(err); name != "" {
		h = " [" + name + "]" + h
	}
	return h
}
