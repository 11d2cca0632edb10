// Package dbus manages properties of any D-Bus object named in a state
// document: read with Properties.Get/GetAll, set with Properties.Set where
// the property is writable, otherwise through a setter method named by a
// mapping file (never by the document). See README.md.
package dbus

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

const (
	ifaceProperties = "org.freedesktop.DBus.Properties"
	ifaceIntrospect = "org.freedesktop.DBus.Introspectable"
)

func init() {
	plugin.Register("dbus", func(plugin.Options) plugin.Plugin { return New(os.Getenv(MappingsEnv)) })
}

// Plugin is the dbus plugin.
type Plugin struct {
	mappings *mappingSet
	mapErr   error
	// timeout bounds each D-Bus call (and connecting) unless the context
	// has an earlier deadline.
	timeout time.Duration

	mu    sync.Mutex
	conns map[string]*godbus.Conn // the process's shared connections, never closed here
	// intro is the introspection of the last QueryFor, for Apply.
	intro map[objKey]*introspection
}

// New returns the plugin with the shipped mappings and those in dir (if
// not empty). A bad mapping makes the plugin unavailable, saying why.
func New(dir string) *Plugin {
	p := &Plugin{timeout: dbusx.DefaultTimeout, conns: map[string]*godbus.Conn{}, intro: map[objKey]*introspection{}}
	p.mappings, p.mapErr = loadMappings(dir)
	if p.mapErr != nil && dir != "" {
		p.mapErr = fmt.Errorf("mappings (%s=%s): %w", MappingsEnv, dir, p.mapErr)
	}
	return p
}

func (p *Plugin) Name() string    { return "dbus" }
func (p *Plugin) NewState() any   { return &State{Objects: []Object{}} }
func (p *Plugin) After() []string { return nil }

// Available reports a bad mapping file; buses are checked per object.
func (p *Plugin) Available(context.Context) error { return p.mapErr }

// Validate implements plugin.Validator.
func (p *Plugin) Validate(st any) state.Problems {
	s, _ := st.(*State)
	if s == nil {
		return nil
	}
	ps := validate(s)
	if p.mapErr != nil {
		ps = append(ps, state.Problem{Msg: p.mapErr.Error()})
	}
	return ps
}

// Close drops the plugin's references to the process's shared
// connections, which stay open for the others.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.conns)
	return nil
}

// Query reports nothing: the plugin manages only what a document names, so
// the full live state is the empty list. QueryFor reads named properties.
func (p *Plugin) Query(context.Context) (any, error) {
	return &State{Objects: []Object{}}, nil
}

// Subset implements plugin.Plugin.
func (p *Plugin) Subset(st any, items []string) any {
	s, _ := st.(*State)
	return subset(s, items)
}

func (p *Plugin) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.timeout)
}

func (p *Plugin) conn(ctx context.Context, bus string) (*godbus.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[bus]; c != nil && c.Connected() {
		return c, nil
	}
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	c, err := dbusx.Shared(ctx, dbusx.Bus(bus))
	if err != nil {
		return nil, err
	}
	p.conns[bus] = c
	return c, nil
}

// checkName fails clearly when a service is neither running nor activatable.
func (p *Plugin) checkName(ctx context.Context, conn *godbus.Conn, bus, service string) error {
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	ok, err := dbusx.HasName(ctx, conn, service)
	if err != nil {
		return fmt.Errorf("ask the %s for %s: %w", dbusx.Bus(bus), service, err)
	}
	if !ok {
		return fmt.Errorf("%s is not on the %s and cannot be activated", service, dbusx.Bus(bus))
	}
	return nil
}

func (p *Plugin) introspect(ctx context.Context, conn *godbus.Conn, k objKey) (*introspection, error) {
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	var xml string
	obj := conn.Object(k.service, godbus.ObjectPath(k.path))
	if err := dbusx.Call(ctx, obj, ifaceIntrospect+".Introspect", []any{&xml}); err != nil {
		return nil, fmt.Errorf("introspect %s %s: %w%s", k.service, k.path, err, p.callHint(err))
	}
	in, err := parseIntrospection([]byte(xml))
	if err != nil {
		return nil, fmt.Errorf("introspect %s %s: %w", k.service, k.path, err)
	}
	return in, nil
}

func hint(err error) string {
	switch dbusx.ErrorName(err) {
	case "org.freedesktop.DBus.Error.UnknownMethod", "org.freedesktop.DBus.Error.UnknownInterface":
		return " (op-dbus learns property types and access from introspection; this service does not offer it)"
	}
	if dbusx.IsAccessDenied(err) {
		return " (access denied: run as root, or grant the polkit action or bus policy the service requires)"
	}
	return ""
}

// QueryFor implements plugin.Scoped: it reads exactly the properties
// desired names, after introspecting each object once.
func (p *Plugin) QueryFor(ctx context.Context, desired any) (any, error) {
	des, _ := desired.(*State)
	out := &State{Objects: []Object{}, intro: map[objKey]*introspection{}}
	if des == nil {
		return out, nil
	}
	checked := map[[2]string]bool{}
	for i, o := range des.Objects {
		at := fmt.Sprintf("objects[%d]", i)
		k := keyOf(o)
		conn, err := p.conn(ctx, k.bus)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		if nk := [2]string{k.bus, k.service}; !checked[nk] {
			if err := p.checkName(ctx, conn, k.bus, k.service); err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			checked[nk] = true
		}
		in := out.intro[k]
		if in == nil {
			if in, err = p.introspect(ctx, conn, k); err != nil {
				return nil, fmt.Errorf("%s: %w", at, err)
			}
			out.intro[k] = in
		}
		cur := Object{Bus: o.Bus, Service: o.Service, Path: o.Path, Interface: o.Interface, Properties: map[string]json.RawMessage{}}
		ii := in.Interfaces[o.Interface]
		if ii != nil {
			if err := p.readProps(ctx, conn, i, o, ii, cur.Properties); err != nil {
				return nil, err
			}
		}
		out.Objects = append(out.Objects, cur)
	}
	p.mu.Lock()
	for k, in := range out.intro {
		p.intro[k] = in
	}
	p.mu.Unlock()
	return out, nil
}

// readProps reads the named readable properties of one interface: with
// Get for one, GetAll for more (then Get for any GetAll left out). A
// service that answers GetAll with an error (timedated fails it when it
// cannot ask systemd about its NTP unit) is read with Get, property by
// property, and a property that cannot be read is named in the error.
func (p *Plugin) readProps(ctx context.Context, conn *godbus.Conn, i int, o Object, ii *ifaceInfo, into map[string]json.RawMessage) error {
	var want []string
	for _, name := range slices.Sorted(maps.Keys(o.Properties)) {
		if pi := ii.Properties[name]; pi != nil && pi.Read {
			want = append(want, name)
		}
	}
	if len(want) == 0 {
		return nil
	}
	obj := conn.Object(o.Service, godbus.ObjectPath(o.Path))
	vals := map[string]godbus.Variant{}
	if len(want) > 1 {
		all, err := p.getAll(ctx, obj, o.Interface)
		switch {
		case err == nil:
			vals = all
		case dbusx.ErrorName(err) == "" || dbusx.IsAccessDenied(err):
			// No answer in time, a malformed reply, or a refusal: Get
			// would fare no better.
			return fmt.Errorf("objects[%d]: read %s.* of %s %s: %w%s", i, o.Interface, o.Service, o.Path, err, p.callHint(err))
		}
	}
	for _, name := range want {
		if _, ok := vals[name]; ok {
			continue
		}
		cctx, cancel := p.ctx(ctx)
		v, err := dbusx.Get(cctx, obj, o.Interface, name)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: read %s %s: %w%s", propPath(i, name), o.Service, o.Path, err, p.callHint(err))
		}
		vals[name] = v
	}
	for _, name := range want {
		pi := ii.Properties[name]
		v := vals[name]
		val, got := v.Value(), v.Signature().String()
		// The variant's own signature must be the declared one.
		if got != pi.Type.str {
			return fmt.Errorf("%s: the service sent a value of type %s, but its introspection declares %s", propPath(i, name), got, pi.Type.str)
		}
		j, err := toJSON(pi.Type, val, propPath(i, name), true)
		if err != nil {
			return err
		}
		b, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("%s: %w", propPath(i, name), err)
		}
		into[name] = b
	}
	return nil
}

// introFor finds an object's introspection: from the current state Plan
// got, else from the last QueryFor.
func (p *Plugin) introFor(cur *State, k objKey) *introspection {
	if cur != nil && cur.intro != nil {
		if in := cur.intro[k]; in != nil {
			return in
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.intro[k]
}

// getAll is one Properties.GetAll within the plugin's timeout, keeping
// each value's own signature: the reply body is read directly, since
// godbus's Store into a map of variants re-infers the signatures from the
// Go values, turning a "(si)" into "av" and dropping a level of a "v".
// Unlike dbusx.GetAll it does not fall back to Get: readProps does, for
// the properties the document names.
func (p *Plugin) getAll(ctx context.Context, obj godbus.BusObject, iface string) (map[string]godbus.Variant, error) {
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	c := obj.CallWithContext(ctx, ifaceProperties+".GetAll", 0, iface)
	if c.Err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GetAll: no reply: %w", ctx.Err())
		}
		return nil, fmt.Errorf("GetAll: %w", c.Err)
	}
	if len(c.Body) != 1 {
		return nil, fmt.Errorf("GetAll: unexpected reply of %d values", len(c.Body))
	}
	m, ok := c.Body[0].(map[string]godbus.Variant)
	if !ok {
		return nil, fmt.Errorf("GetAll: unexpected reply of type %T", c.Body[0])
	}
	return m, nil
}
