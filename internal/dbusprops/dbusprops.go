// Package dbusprops implements a plugin for one D-Bus object whose
// properties are read with GetAll (one Get each when the service's GetAll
// fails) and changed through setter methods, the shape of systemd's
// hostname1, timedate1 and locale1. A plugin package describes the object
// in a Spec; this package does query, plan and apply.
package dbusprops

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Setter changes one or more fields with one method call.
type Setter struct {
	// Item names the op and what rollback restores ("static_hostname").
	Item string
	// Fields are the JSON names this call sets together.
	Fields []string
	// Method on the Spec's interface.
	Method string
	// Args builds the call's arguments from the values of Fields (desired
	// where the document names them, current otherwise).
	Args func(v map[string]any) []any
	// Verb describes the op: "set static hostname".
	Verb string
	// Refuse, if set, rejects values the service would accept but not
	// honour, at plan time, so the plan fails instead of the verification.
	Refuse func(v map[string]any) error
}

// Spec describes the object.
type Spec struct {
	Plugin    string
	Service   string
	Path      dbus.ObjectPath
	Interface string
	// Props maps a JSON field name to its D-Bus property.
	Props map[string]string
	// Setters cover every field of Props.
	Setters []Setter
	// NewState returns a pointer to the plugin's typed state struct, whose
	// JSON fields are the keys of Props.
	NewState func() any
	// Validate checks a decoded state (optional).
	Validate func(st any) state.Problems
	// Hint is added to "not on the bus" errors.
	Hint string
	// OmitEmpty lists fields whose empty string from the service means
	// "not set" and is left out of the query, so the query stays a valid
	// desired state (an unset time zone cannot be set back to "").
	OmitEmpty []string
	// Optional lists fields whose property a host may be unable to read
	// (timedated without a usable NTP unit cannot say NTP). When GetAll
	// fails and Get fails for such a property, the query leaves the field
	// out; a failed property of any other field is an error naming it.
	Optional []string
}

// Plugin serves a Spec on a bus.
type Plugin struct {
	spec Spec
	bus  dbusx.Bus

	mu   sync.Mutex
	conn *dbus.Conn
}

// New returns a plugin for spec on the system bus.
func New(spec Spec) *Plugin { return &Plugin{spec: spec, bus: dbusx.System} }

func (p *Plugin) Name() string    { return p.spec.Plugin }
func (p *Plugin) NewState() any   { return p.spec.NewState() }
func (p *Plugin) After() []string { return nil }

// Validate implements plugin.Validator.
func (p *Plugin) Validate(st any) state.Problems {
	if p.spec.Validate == nil {
		return nil
	}
	return p.spec.Validate(st)
}

// Close drops the plugin's reference to the process's shared connection,
// which stays open for the others.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conn = nil
	return nil
}

func (p *Plugin) object(ctx context.Context) (dbus.BusObject, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil || !p.conn.Connected() {
		p.conn = nil
		conn, err := dbusx.Shared(ctx, p.bus)
		if err != nil {
			return nil, err
		}
		ok, err := dbusx.HasName(ctx, conn, p.spec.Service)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s is not on the %s and cannot be activated (%s)", p.spec.Service, p.bus, p.spec.Hint)
		}
		p.conn = conn
	}
	return p.conn.Object(p.spec.Service, p.spec.Path), nil
}

// Available implements plugin.Plugin.
func (p *Plugin) Available(ctx context.Context) error {
	_, err := p.object(ctx)
	return err
}

// Query implements plugin.Plugin with one GetAll, or, when the service's
// GetAll fails, one Get per property (see dbusx.GetAll).
func (p *Plugin) Query(ctx context.Context) (any, error) {
	obj, err := p.object(ctx)
	if err != nil {
		return nil, err
	}
	props, err := dbusx.GetAll(ctx, obj, p.spec.Interface)
	if err = dbusx.Needed(err, p.needed()...); err != nil {
		if _, ok := errors.AsType[*dbusx.PropertyErrors](err); ok {
			// It names the interface already:
			// "timedate: org.freedesktop.timedate1: cannot read property NTP ...".
			return nil, fmt.Errorf("%s: %w", p.spec.Plugin, err)
		}
		return nil, fmt.Errorf("%s: %w", p.spec.Service, err)
	}
	m := map[string]any{}
	for field, prop := range p.spec.Props {
		v, ok := props[prop]
		if !ok {
			continue
		}
		if sv, ok := v.Value().(string); ok && sv == "" && slices.Contains(p.spec.OmitEmpty, field) {
			continue
		}
		m[field] = v.Value()
	}
	st := p.spec.NewState()
	if err := roundTrip(m, st); err != nil {
		return nil, fmt.Errorf("%s: unexpected property types: %w", p.spec.Service, err)
	}
	return st, nil
}

// needed are the properties the query cannot do without: those of every
// field that is not Optional, sorted.
func (p *Plugin) needed() []string {
	var props []string
	for field, prop := range p.spec.Props {
		if !slices.Contains(p.spec.Optional, field) {
			props = append(props, prop)
		}
	}
	sort.Strings(props)
	return props
}

func roundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func fields(st any) map[string]any {
	m := map[string]any{}
	if st == nil || reflect.ValueOf(st).IsNil() {
		return m
	}
	_ = roundTrip(st, &m)
	return m
}

type opData struct {
	Method string         `json:"method"`
	Values map[string]any `json:"values"`
}

// Plan implements plugin.Plugin: one op per setter whose fields differ.
func (p *Plugin) Plan(current, desired any) ([]plugin.Op, error) {
	cur, des := fields(current), fields(desired)
	var ops []plugin.Op
	for _, s := range p.spec.Setters {
		var changes []plugin.Change
		vals := map[string]any{}
		for _, f := range s.Fields {
			vals[f] = cur[f]
			d, named := des[f]
			if !named {
				continue
			}
			vals[f] = d
			if !reflect.DeepEqual(normalize(d), normalize(cur[f])) {
				changes = append(changes, plugin.Change{Path: f, Current: cur[f], Desired: d})
			}
		}
		if len(changes) == 0 {
			continue
		}
		if s.Refuse != nil {
			if err := s.Refuse(vals); err != nil {
				return nil, err
			}
		}
		desc := s.Verb
		if len(s.Fields) == 1 {
			desc = fmt.Sprintf("%s to %s", s.Verb, showValue(vals[s.Fields[0]]))
		}
		ops = append(ops, plugin.Op{
			ID:          p.spec.Plugin + "/" + s.Item,
			Item:        s.Item,
			Description: desc,
			Data:        plugin.MustData(opData{Method: s.Method, Values: vals}),
			Reversible:  true,
			Changes:     changes,
		})
	}
	return ops, nil
}

func showValue(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// normalize makes lists of strings order-insensitive (locale entries).
func normalize(v any) any {
	if a, ok := v.([]any); ok {
		s := make([]string, 0, len(a))
		for _, x := range a {
			s = append(s, fmt.Sprint(x))
		}
		sort.Strings(s)
		return s
	}
	return v
}

// Apply implements plugin.Plugin.
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	var d opData
	dec := json.NewDecoder(bytes.NewReader(op.Data))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	var s *Setter
	for i := range p.spec.Setters {
		if p.spec.Setters[i].Method == d.Method {
			s = &p.spec.Setters[i]
		}
	}
	if s == nil {
		return fmt.Errorf("op names method %q, which is not a setter of %s", d.Method, p.spec.Interface)
	}
	obj, err := p.object(ctx)
	if err != nil {
		return err
	}
	if err := dbusx.Call(ctx, obj, p.spec.Interface+"."+s.Method, nil, s.Args(d.Values)...); err != nil {
		if dbusx.IsAccessDenied(err) {
			return fmt.Errorf("%s: %s: access denied (run as root or grant the polkit action of %s): %w", p.spec.Plugin, s.Method, p.spec.Service, err)
		}
		return fmt.Errorf("%s: %s on %s: %w", p.spec.Plugin, s.Method, p.spec.Service, err)
	}
	return nil
}

// Subset implements plugin.Plugin: the fields of the touched setters.
func (p *Plugin) Subset(st any, items []string) any {
	all := fields(st)
	keep := map[string]any{}
	for _, it := range items {
		for _, s := range p.spec.Setters {
			if s.Item != it {
				continue
			}
			for _, f := range s.Fields {
				if v, ok := all[f]; ok {
					keep[f] = v
				}
			}
		}
	}
	out := p.spec.NewState()
	_ = roundTrip(keep, out)
	return out
}

// String, Bool and Strings convert decoded op values for Args.
func String(v any) string {
	s, _ := v.(string)
	return s
}

func Bool(v any) bool {
	b, _ := v.(bool)
	return b
}

func Strings(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
