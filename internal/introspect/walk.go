package introspect

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
)

// Result is a whole-bus (or per-service) introspection. Its JSON form is
// stable: services, objects, interfaces, members and properties are sorted
// by name, so two runs can be diffed. See docs/introspection.md.
type Result struct {
	Bus      string    `json:"bus"`
	Services []Service `json:"services"`
	Stats    Stats     `json:"stats"`
}

// Stats describes the walk.
type Stats struct {
	Services int `json:"services"`
	Objects  int `json:"objects"`
	// Calls counts every D-Bus method call the walk made.
	Calls      int64   `json:"calls"`
	Errors     int     `json:"errors"`
	DurationMS float64 `json:"duration_ms"`
}

// Service is one bus name.
type Service struct {
	Name string `json:"name"`
	// Owner is the unique name owning Name, empty if not running.
	Owner string `json:"owner,omitempty"`
	// Activatable reports that the bus can start the service on demand.
	Activatable bool `json:"activatable,omitempty"`
	// NotWalked is set for activatable services that were not running and
	// were not started (walk them with --activatable).
	NotWalked bool     `json:"not_walked,omitempty"`
	Error     string   `json:"error,omitempty"`
	Objects   []Object `json:"objects,omitempty"`
}

// Object is one object path.
type Object struct {
	Path       string     `json:"path"`
	Interfaces []ObjIface `json:"interfaces,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// ObjIface is an interface of an object with its property values.
type ObjIface struct {
	Name        string       `json:"name"`
	Methods     []Method     `json:"methods,omitempty"`
	Signals     []Signal     `json:"signals,omitempty"`
	Properties  []PropValue  `json:"properties,omitempty"`
	Annotations []Annotation `json:"annotations,omitempty"`
	// Error is set when the property values could not be read.
	Error string `json:"error,omitempty"`
}

// PropValue is a property declaration and, if readable, its value.
type PropValue struct {
	Property
	Value any    `json:"value,omitempty"`
	Error string `json:"error,omitempty"`
}

// Walker walks a bus over one connection.
type Walker struct {
	Conn *dbus.Conn
	// Bus names the bus in the result ("system", "session" or an address).
	Bus string
	// Services restricts the walk to these names; empty means every
	// well-known name on the bus.
	Services []string
	// Activatable also walks services that are activatable but not running,
	// which starts them.
	Activatable bool
	// Parallel bounds calls in flight on the connection.
	Parallel int
	// CallTimeout bounds each call.
	CallTimeout time.Duration
	// NoValues skips reading property values.
	NoValues bool

	calls atomic.Int64
	sem   chan struct{}
}

// standard interfaces carry no properties of their own; GetAll on them is
// never needed.
var noProps = map[string]bool{
	"org.freedesktop.DBus.Introspectable": true,
	"org.freedesktop.DBus.Peer":           true,
	"org.freedesktop.DBus.Properties":     true,
	"org.freedesktop.DBus.ObjectManager":  true,
}

// Walk introspects the bus.
func (w *Walker) Walk(ctx context.Context) (*Result, error) {
	start := time.Now()
	if w.Parallel <= 0 {
		w.Parallel = 32
	}
	if w.CallTimeout <= 0 {
		w.CallTimeout = 5 * time.Second
	}
	w.sem = make(chan struct{}, w.Parallel)
	services, err := w.services(ctx)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i := range services {
		if services[i].NotWalked || services[i].Error != "" {
			continue
		}
		wg.Add(1)
		go func(s *Service) {
			defer wg.Done()
			w.walkService(ctx, s)
		}(&services[i])
	}
	wg.Wait()
	res := &Result{Bus: w.Bus, Services: services}
	for _, s := range services {
		if s.Error != "" {
			res.Stats.Errors++
		}
		res.Stats.Objects += len(s.Objects)
		for _, o := range s.Objects {
			if o.Error != "" {
				res.Stats.Errors++
			}
			for _, i := range o.Interfaces {
				if i.Error != "" {
					res.Stats.Errors++
				}
			}
		}
	}
	res.Stats.Services = len(services)
	res.Stats.Calls = w.calls.Load()
	res.Stats.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return res, nil
}

// call makes one bounded call, counted, with at most Parallel in flight.
func (w *Walker) call(ctx context.Context, obj dbus.BusObject, method string, args ...any) *dbus.Call {
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return &dbus.Call{Err: ctx.Err()}
	}
	defer func() { <-w.sem }()
	w.calls.Add(1)
	cctx, cancel := context.WithTimeout(ctx, w.CallTimeout)
	defer cancel()
	c := obj.CallWithContext(cctx, method, 0, args...)
	if c.Err != nil && cctx.Err() != nil && ctx.Err() == nil {
		c.Err = fmt.Errorf("no reply within %s", w.CallTimeout)
	}
	return c
}

func (w *Walker) services(ctx context.Context) ([]Service, error) {
	bus := w.Conn.BusObject()
	var names, act []string
	if c := w.call(ctx, bus, "org.freedesktop.DBus.ListNames"); c.Err != nil {
		return nil, fmt.Errorf("ListNames: %w", c.Err)
	} else if err := c.Store(&names); err != nil {
		return nil, fmt.Errorf("ListNames: %w", err)
	}
	if c := w.call(ctx, bus, "org.freedesktop.DBus.ListActivatableNames"); c.Err == nil {
		_ = c.Store(&act)
	}
	running := map[string]bool{}
	for _, n := range names {
		running[n] = true
	}
	activatable := map[string]bool{}
	for _, n := range act {
		activatable[n] = true
	}
	want := w.Services
	if len(want) == 0 {
		seen := map[string]bool{}
		for _, n := range append(append([]string{}, names...), act...) {
			if !strings.HasPrefix(n, ":") && !seen[n] {
				seen[n] = true
				want = append(want, n)
			}
		}
	}
	sort.Strings(want)
	out := make([]Service, 0, len(want))
	for _, n := range want {
		s := Service{Name: n, Activatable: activatable[n]}
		switch {
		case !ValidBusName(n):
			s.Error = fmt.Sprintf("%q is not a valid bus name", n)
		case !running[n] && !activatable[n] && !strings.HasPrefix(n, ":"):
			s.Error = "no such name on the bus (not running, not activatable)"
		case !running[n] && !w.Activatable && !strings.HasPrefix(n, ":"):
			s.NotWalked = true
		}
		if running[n] && !strings.HasPrefix(n, ":") {
			var owner string
			if c := w.call(ctx, bus, "org.freedesktop.DBus.GetNameOwner", n); c.Err == nil {
				_ = c.Store(&owner)
			}
			s.Owner = owner
		} else if strings.HasPrefix(n, ":") {
			s.Owner = n
		}
		out = append(out, s)
	}
	return out, nil
}

// walkService introspects every object reachable from "/". Where an object
// offers ObjectManager, GetManagedObjects supplies the property values of
// every object below it in one call, so their GetAll calls are skipped.
func (w *Walker) walkService(ctx context.Context, s *Service) {
	var mu sync.Mutex
	objects := map[string]*Object{}
	managed := map[string]map[string]map[string]dbus.Variant{}
	var managedMu sync.Mutex
	// Property values are read after the tree is known, so managed values
	// found anywhere can be used.
	var todo []ifaceRef

	var wg sync.WaitGroup
	var visit func(path dbus.ObjectPath)
	visit = func(path dbus.ObjectPath) {
		defer wg.Done()
		obj := w.Conn.Object(s.Name, path)
		o := &Object{Path: string(path)}
		mu.Lock()
		if _, dup := objects[o.Path]; dup {
			mu.Unlock()
			return
		}
		objects[o.Path] = o
		mu.Unlock()
		c := w.call(ctx, obj, "org.freedesktop.DBus.Introspectable.Introspect")
		var xmlData string
		if c.Err == nil {
			c.Err = c.Store(&xmlData)
		}
		if c.Err != nil {
			o.Error = "Introspect: " + errText(c.Err)
			return
		}
		node, err := ParseXML([]byte(xmlData))
		if err != nil {
			o.Error = err.Error()
			return
		}
		hasOM := false
		for _, i := range node.Interfaces {
			o.Interfaces = append(o.Interfaces, ObjIface{Name: i.Name, Methods: i.Methods, Signals: i.Signals, Annotations: i.Annotations, Properties: props(i.Properties)})
			hasOM = hasOM || i.Name == "org.freedesktop.DBus.ObjectManager"
		}
		if hasOM && !w.NoValues {
			if c := w.call(ctx, obj, "org.freedesktop.DBus.ObjectManager.GetManagedObjects"); c.Err == nil && len(c.Body) == 1 {
				// Straight from the decoded body: Store's conversion would
				// flatten a variant holding a variant.
				m, _ := c.Body[0].(map[dbus.ObjectPath]map[string]map[string]dbus.Variant)
				managedMu.Lock()
				for p, ifs := range m {
					managed[string(p)] = ifs
				}
				managedMu.Unlock()
			}
		}
		mu.Lock()
		for idx := range o.Interfaces {
			if len(o.Interfaces[idx].Properties) > 0 {
				todo = append(todo, ifaceRef{o, idx})
			}
		}
		mu.Unlock()
		for _, ch := range node.Children {
			wg.Add(1)
			go visit(ChildPath(path, ch.Name))
		}
	}
	wg.Add(1)
	visit("/")
	wg.Wait()

	if !w.NoValues {
		w.readValues(ctx, s.Name, todo, managed)
	}
	s.Objects = make([]Object, 0, len(objects))
	for _, o := range objects {
		sortObject(o)
		s.Objects = append(s.Objects, *o)
	}
	sort.Slice(s.Objects, func(i, j int) bool { return s.Objects[i].Path < s.Objects[j].Path })
}

type ifaceRef struct {
	obj   *Object
	iface int
}

// readValues fills property values: from GetManagedObjects where the
// object was managed and the interface present, otherwise GetAll.
func (w *Walker) readValues(ctx context.Context, service string, refs []ifaceRef, managed map[string]map[string]map[string]dbus.Variant) {
	var wg sync.WaitGroup
	for _, r := range refs {
		oi := &r.obj.Interfaces[r.iface]
		if noProps[oi.Name] {
			continue
		}
		if ifs, ok := managed[r.obj.Path]; ok {
			if vals, ok := ifs[oi.Name]; ok {
				fill(oi, vals)
				continue
			}
		}
		wg.Add(1)
		go func(path string) {
			defer wg.Done()
			c := w.call(ctx, w.Conn.Object(service, dbus.ObjectPath(path)), "org.freedesktop.DBus.Properties.GetAll", oi.Name)
			var vals map[string]dbus.Variant
			if c.Err == nil {
				// Straight from the decoded body: Store's conversion would
				// flatten a variant holding a variant.
				ok := len(c.Body) == 1
				if ok {
					vals, ok = c.Body[0].(map[string]dbus.Variant)
				}
				if !ok {
					c.Err = fmt.Errorf("GetAll returned %s, not a{sv}", c.Body)
				}
			}
			if c.Err != nil {
				oi.Error = "GetAll: " + errText(c.Err)
				return
			}
			fill(oi, vals)
		}(r.obj.Path)
	}
	wg.Wait()
}

func fill(oi *ObjIface, vals map[string]dbus.Variant) {
	for i := range oi.Properties {
		p := &oi.Properties[i]
		if p.Access == "write" {
			continue
		}
		v, ok := vals[p.Name]
		if !ok {
			p.Error = "not returned by GetAll"
			continue
		}
		p.Value = Value(v.Value())
	}
}

func props(ps []Property) []PropValue {
	out := make([]PropValue, len(ps))
	for i, p := range ps {
		out[i] = PropValue{Property: p}
	}
	return out
}

func sortObject(o *Object) {
	sort.Slice(o.Interfaces, func(i, j int) bool { return o.Interfaces[i].Name < o.Interfaces[j].Name })
	for k := range o.Interfaces {
		oi := &o.Interfaces[k]
		sort.SliceStable(oi.Methods, func(i, j int) bool { return oi.Methods[i].Name < oi.Methods[j].Name })
		sort.SliceStable(oi.Signals, func(i, j int) bool { return oi.Signals[i].Name < oi.Signals[j].Name })
		sort.SliceStable(oi.Properties, func(i, j int) bool { return oi.Properties[i].Name < oi.Properties[j].Name })
	}
}

// errText renders a call error: the D-Bus error name and message.
func errText(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		msg := de.Name
		if len(de.Body) > 0 {
			msg += ": " + fmt.Sprint(de.Body[0])
		}
		return msg
	}
	if n := dbusx.ErrorName(err); n != "" {
		return n + ": " + err.Error()
	}
	return err.Error()
}
