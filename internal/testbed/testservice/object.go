package testservice

import (
	"encoding/xml"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Standard interfaces.
const (
	ifaceProperties    = "org.freedesktop.DBus.Properties"
	ifaceIntrospect    = "org.freedesktop.DBus.Introspectable"
	ifacePeer          = "org.freedesktop.DBus.Peer"
	ifaceObjectManager = "org.freedesktop.DBus.ObjectManager"

	annEmits      = "org.freedesktop.DBus.Property.EmitsChangedSignal"
	annDeprecated = "org.freedesktop.DBus.Deprecated"
)

// Standard error names (the D-Bus specification's, as sd-bus and GDBus
// return them; godbus's prop package uses non-standard ones).
const (
	errUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
	errUnknownProperty  = "org.freedesktop.DBus.Error.UnknownProperty"
	errPropertyReadOnly = "org.freedesktop.DBus.Error.PropertyReadOnly"
	errInvalidArgs      = "org.freedesktop.DBus.Error.InvalidArgs"
	errAccessDenied     = "org.freedesktop.DBus.Error.AccessDenied"
)

func newErr(name, format string, a ...any) *dbus.Error {
	return dbus.NewError(name, []any{fmt.Sprintf(format, a...)})
}

// Introspection data of the standard interfaces, as sd-bus declares them.
var (
	propertiesData = introspect.Interface{
		Name: ifaceProperties,
		Methods: []introspect.Method{
			{Name: "Get", Args: []introspect.Arg{
				{Name: "interface_name", Type: "s", Direction: "in"},
				{Name: "property_name", Type: "s", Direction: "in"},
				{Name: "value", Type: "v", Direction: "out"},
			}},
			{Name: "GetAll", Args: []introspect.Arg{
				{Name: "interface_name", Type: "s", Direction: "in"},
				{Name: "props", Type: "a{sv}", Direction: "out"},
			}},
			{Name: "Set", Args: []introspect.Arg{
				{Name: "interface_name", Type: "s", Direction: "in"},
				{Name: "property_name", Type: "s", Direction: "in"},
				{Name: "value", Type: "v", Direction: "in"},
			}},
		},
		Signals: []introspect.Signal{
			{Name: "PropertiesChanged", Args: []introspect.Arg{
				{Name: "interface_name", Type: "s"},
				{Name: "changed_properties", Type: "a{sv}"},
				{Name: "invalidated_properties", Type: "as"},
			}},
		},
	}
	objectManagerData = introspect.Interface{
		Name: ifaceObjectManager,
		Methods: []introspect.Method{
			{Name: "GetManagedObjects", Args: []introspect.Arg{
				{Name: "objpath_interfaces_and_properties", Type: "a{oa{sa{sv}}}", Direction: "out"},
			}},
		},
		Signals: []introspect.Signal{
			{Name: "InterfacesAdded", Args: []introspect.Arg{
				{Name: "object_path", Type: "o"},
				{Name: "interfaces_and_properties", Type: "a{sa{sv}}"},
			}},
			{Name: "InterfacesRemoved", Args: []introspect.Arg{
				{Name: "object_path", Type: "o"},
				{Name: "interfaces", Type: "as"},
			}},
		},
	}
)

// stdData returns the introspection data of a standard interface.
func stdData(name string) introspect.Interface {
	switch name {
	case ifaceProperties:
		return propertiesData
	case ifaceIntrospect:
		return introspect.IntrospectData
	case ifacePeer:
		return introspect.PeerData
	case ifaceObjectManager:
		return objectManagerData
	}
	panic("testservice: no standard interface " + name)
}

// property declares one property of an interface.
type property struct {
	name  string
	sig   string
	write bool
	// emit is the EmitsChangedSignal annotation: "" (not annotated, i.e.
	// "true"), "invalidates", "const" or "false".
	emit   string
	annots []introspect.Annotation
	// check validates a new value given to Properties.Set; may be nil.
	check func(v any) *dbus.Error
}

// ifaceDef declares one of our own interfaces.
type ifaceDef struct {
	name    string
	methods []introspect.Method
	signals []introspect.Signal
	props   []*property
	byName  map[string]*property
}

func newIface(name string, methods []introspect.Method, signals []introspect.Signal, props ...*property) *ifaceDef {
	d := &ifaceDef{name: name, methods: methods, signals: signals, props: props, byName: map[string]*property{}}
	for _, p := range props {
		d.byName[p.name] = p
	}
	return d
}

func (d *ifaceDef) introspection() introspect.Interface {
	i := introspect.Interface{Name: d.name, Methods: d.methods, Signals: d.signals}
	for _, p := range d.props {
		ip := introspect.Property{Name: p.name, Type: p.sig, Access: "read"}
		if p.write {
			ip.Access = "readwrite"
		}
		if p.emit != "" {
			ip.Annotations = append(ip.Annotations, introspect.Annotation{Name: annEmits, Value: p.emit})
		}
		ip.Annotations = append(ip.Annotations, p.annots...)
		i.Properties = append(i.Properties, ip)
	}
	return i
}

const doctype = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
`

// nodeXML is the introspection document of a node with ifaces and the
// given children (names, sorted here).
func nodeXML(ifaces []introspect.Interface, children []string) string {
	n := introspect.Node{Interfaces: ifaces}
	children = append([]string(nil), children...)
	sort.Strings(children)
	for _, c := range children {
		n.Children = append(n.Children, introspect.Node{Name: c})
	}
	b, err := xml.MarshalIndent(n, "", " ")
	if err != nil {
		panic(err)
	}
	return doctype + string(b) + "\n"
}

// object is an exported object with properties: its own interfaces (ifaces)
// and standard ones (std), all listed by GetManagedObjects.
type object struct {
	conn   *dbus.Conn
	mu     *sync.RWMutex // the service's; guards values
	path   dbus.ObjectPath
	ifaces []*ifaceDef
	std    []string
	values map[string]map[string]dbus.Variant
	// changed, if not nil, is called (without the lock) after a property
	// changed.
	changed func(iface, prop string)
}

func (o *object) iface(name string) *ifaceDef {
	for _, d := range o.ifaces {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (o *object) hasStd(name string) bool {
	for _, s := range o.std {
		if s == name {
			return true
		}
	}
	return false
}

// introspection returns the object's interfaces, its own first.
func (o *object) introspection() []introspect.Interface {
	var is []introspect.Interface
	for _, d := range o.ifaces {
		is = append(is, d.introspection())
	}
	for _, s := range o.std {
		is = append(is, stdData(s))
	}
	return is
}

// init sets the initial values; they must match the declared signatures.
// A dbus.Variant is taken as the value itself, except for a property of
// type v.
func (o *object) init(iface string, vals map[string]any) {
	d := o.iface(iface)
	if o.values == nil {
		o.values = map[string]map[string]dbus.Variant{}
	}
	m := map[string]dbus.Variant{}
	for _, p := range d.props {
		v, ok := vals[p.name]
		if !ok {
			panic("testservice: no value for " + iface + "." + p.name)
		}
		vv, ok := v.(dbus.Variant) // a value with its own signature (sortedDict)
		if !ok || p.sig == "v" {
			vv = dbus.MakeVariant(v)
		}
		if vv.Signature().String() != p.sig {
			panic(fmt.Sprintf("testservice: %s.%s: value has type %s, declared %s", iface, p.name, vv.Signature(), p.sig))
		}
		m[p.name] = vv
	}
	o.values[iface] = m
}

// getAll returns a copy of iface's values; o.mu must be held.
func (o *object) getAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if o.iface(iface) == nil {
		if o.hasStd(iface) {
			return map[string]dbus.Variant{}, nil
		}
		return nil, newErr(errUnknownInterface, "Object %s has no interface %s", o.path, iface)
	}
	m := make(map[string]dbus.Variant, len(o.values[iface]))
	for k, v := range o.values[iface] {
		m[k] = v
	}
	return m, nil
}

// managed returns what GetManagedObjects lists for o; o.mu must be held.
func (o *object) managed() map[string]map[string]dbus.Variant {
	m := map[string]map[string]dbus.Variant{}
	for _, d := range o.ifaces {
		m[d.name], _ = o.getAll(d.name)
	}
	for _, s := range o.std {
		m[s] = map[string]dbus.Variant{}
	}
	return m
}

// set stores v (of the declared type) and emits PropertiesChanged as
// annotated, if the value changed.
func (o *object) set(iface, name string, v any) {
	p := o.iface(iface).byName[name]
	nv := dbus.MakeVariant(v)
	o.mu.Lock()
	old := o.values[iface][name]
	same := reflect.DeepEqual(old.Value(), nv.Value())
	if !same {
		o.values[iface][name] = nv
	}
	o.mu.Unlock()
	if same {
		return
	}
	switch p.emit {
	case "":
		_ = o.conn.Emit(o.path, ifaceProperties+".PropertiesChanged", iface, map[string]dbus.Variant{name: nv}, []string{})
	case "invalidates":
		_ = o.conn.Emit(o.path, ifaceProperties+".PropertiesChanged", iface, map[string]dbus.Variant{}, []string{name})
	}
	if o.changed != nil {
		o.changed(iface, name)
	}
}

// props implements org.freedesktop.DBus.Properties for an object.
type props struct{ o *object }

func (p props) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	o := p.o
	d := o.iface(iface)
	if d == nil {
		if o.hasStd(iface) {
			return dbus.Variant{}, newErr(errUnknownProperty, "Interface %s has no property %s", iface, name)
		}
		return dbus.Variant{}, newErr(errUnknownInterface, "Object %s has no interface %s", o.path, iface)
	}
	if d.byName[name] == nil {
		return dbus.Variant{}, newErr(errUnknownProperty, "Interface %s has no property %s", iface, name)
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.values[iface][name], nil
}

// GetAll of "" returns the properties of all interfaces.
func (p props) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	o := p.o
	o.mu.RLock()
	defer o.mu.RUnlock()
	if iface == "" {
		all := map[string]dbus.Variant{}
		for _, d := range o.ifaces {
			for k, v := range o.values[d.name] {
				all[k] = v
			}
		}
		return all, nil
	}
	return o.getAll(iface)
}

func (p props) Set(iface, name string, v dbus.Variant) *dbus.Error {
	o := p.o
	d := o.iface(iface)
	if d == nil {
		if o.hasStd(iface) {
			return newErr(errUnknownProperty, "Interface %s has no property %s", iface, name)
		}
		return newErr(errUnknownInterface, "Object %s has no interface %s", o.path, iface)
	}
	pr := d.byName[name]
	switch {
	case pr == nil:
		return newErr(errUnknownProperty, "Interface %s has no property %s", iface, name)
	case !pr.write:
		return newErr(errPropertyReadOnly, "Property %s.%s is read-only", iface, name)
	case v.Signature().String() != pr.sig:
		return newErr(errInvalidArgs, "Property %s.%s has type %s, got %s", iface, name, pr.sig, v.Signature())
	}
	if pr.check != nil {
		if err := pr.check(v.Value()); err != nil {
			return err
		}
	}
	o.set(iface, name, v.Value())
	return nil
}

// export exports o's Properties and Introspectable (with xml) and records
// what it exported in ex.
func (o *object) export(ex *exports, xmlDoc string) error {
	if err := ex.export(props{o}, o.path, ifaceProperties); err != nil {
		return err
	}
	return ex.export(introspect.Introspectable(xmlDoc), o.path, ifaceIntrospect)
}

// exports records what was exported on a connection, to undo it.
type exports struct {
	conn *dbus.Conn
	done []struct {
		path  dbus.ObjectPath
		iface string
	}
}

func (e *exports) export(v any, path dbus.ObjectPath, iface string) error {
	if err := e.conn.Export(v, path, iface); err != nil {
		return err
	}
	e.done = append(e.done, struct {
		path  dbus.ObjectPath
		iface string
	}{path, iface})
	return nil
}

func (e *exports) unexportAll() {
	for i := len(e.done) - 1; i >= 0; i-- {
		_ = e.conn.Export(nil, e.done[i].path, e.done[i].iface)
	}
	e.done = nil
}

// Object paths above our roots ("/", "/org", "/org/opdbus") are shared by
// every service of this package on a connection: their Introspect lists
// the roots served on it. The registry maps each connection to its roots.
var registry = struct {
	sync.Mutex
	roots map[*dbus.Conn]map[dbus.ObjectPath]bool
}{roots: map[*dbus.Conn]map[dbus.ObjectPath]bool{}}

// ancestors returns the proper ancestors of p, from "/".
func ancestors(p dbus.ObjectPath) []dbus.ObjectPath {
	a := []dbus.ObjectPath{"/"}
	s := string(p)
	for i := 1; i < len(s); i++ {
		if s[i] == '/' {
			a = append(a, dbus.ObjectPath(s[:i]))
		}
	}
	return a
}

// child returns the name of the child of anc on the way to p, or "".
func child(anc, p dbus.ObjectPath) string {
	prefix := string(anc)
	if prefix != "/" {
		prefix += "/"
	}
	rest, ok := strings.CutPrefix(string(p), prefix)
	if !ok || rest == "" {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// ancestor implements Introspectable for a shared ancestor node.
type ancestor struct {
	conn *dbus.Conn
	path dbus.ObjectPath
}

func (a ancestor) Introspect() (string, *dbus.Error) {
	registry.Lock()
	set := map[string]bool{}
	for r := range registry.roots[a.conn] {
		if c := child(a.path, r); c != "" {
			set[c] = true
		}
	}
	registry.Unlock()
	var children []string
	for c := range set {
		children = append(children, c)
	}
	return nodeXML([]introspect.Interface{introspect.IntrospectData, introspect.PeerData}, children), nil
}

// claim registers root on conn and exports its ancestors' Introspectable.
// It fails if root is already served on conn.
func claim(conn *dbus.Conn, root dbus.ObjectPath) error {
	registry.Lock()
	defer registry.Unlock()
	roots := registry.roots[conn]
	if roots == nil {
		roots = map[dbus.ObjectPath]bool{}
		registry.roots[conn] = roots
	}
	if roots[root] {
		return fmt.Errorf("testservice: %s is already served on this connection", root)
	}
	for _, a := range ancestors(root) {
		if err := conn.Export(ancestor{conn, a}, a, ifaceIntrospect); err != nil {
			return err
		}
	}
	roots[root] = true
	return nil
}

// unclaim undoes claim, unexporting ancestors no other root needs.
func unclaim(conn *dbus.Conn, root dbus.ObjectPath) {
	registry.Lock()
	defer registry.Unlock()
	roots := registry.roots[conn]
	delete(roots, root)
	for _, a := range ancestors(root) {
		needed := false
		for r := range roots {
			if child(a, r) != "" {
				needed = true
			}
		}
		if !needed {
			_ = conn.Export(nil, a, ifaceIntrospect)
		}
	}
	if len(roots) == 0 {
		delete(registry.roots, conn)
	}
}
