// Package testservice is a D-Bus service of our own, exported with godbus on
// a real bus connection (e.g. to a testbed.Bus), for tests of op-dbus's
// whole-bus introspection (busctl is the oracle) and of its generic D-Bus
// property plugin.
//
// Serve exports Name, a well-behaved service:
//
//	/org/opdbus/Test1                      ObjectManager, Properties, Introspectable, Peer
//	/org/opdbus/Test1/items                (intermediate nodes: Introspectable, Peer)
//	/org/opdbus/Test1/items/gNN            10 subgroups each
//	/org/opdbus/Test1/items/gNN/sNN        10 items each
//	/org/opdbus/Test1/items/gNN/sNN/itemNNNN   org.opdbus.Test1.Item, Properties, Introspectable, Peer
//	/org/opdbus/Test1/settings             org.opdbus.Test1.Settings, Properties, Introspectable, Peer
//
// Item i is at items/g<i/100>/s<i/10%10>/item<i> (%02d, %02d, %04d), so
// 1000 items make 10 groups of 10 subgroups of 10 items, 7 levels below /.
// Every node, "/", "/org" and "/org/opdbus" included, answers Introspect
// with a valid document (DOCTYPE, then <node>) that declares exactly the
// interfaces it implements and lists its children sorted. Peer works on
// every path (godbus answers it).
//
// org.opdbus.Test1.Item, values from the item's index i (see itemValues):
//
//	Name    s      read  "item%04d"             EmitsChangedSignal=const
//	Index   u      read  i                      EmitsChangedSignal=const
//	Enabled b      readwrite  i%2 == 0
//	Level   i      readwrite  i%100 - 50
//	Label   s      readwrite  "Item %d (ü)"     EmitsChangedSignal=invalidates
//	Ratio   d      read  float64(i)/7           EmitsChangedSignal=false
//	Big     t      read  1<<40 + i
//	Small   n      read  -(i%30000)             Deprecated=true
//	Byte    y      read  i%256
//	Tags    as     read  i%4 tags (item0000 has none)
//	Attrs   a{sv}  read  {"label": s, "index": i, "even": b, "list": as, "nested": a{sv}{"depth": u}}
//	Owner   o      read  the item's subgroup path
//	Blob    ay     read  {0, i&255, i>>8&255, 255}
//	Pair    (si)   read  ("item%04d", i)
//	Any     v      read  by i%3: s "any%04d", u i, ai [i, -i]
//	Sig     g      read  "a{sv}"
//	Ping() -> (s reply)             "pong item%04d"
//	SetLevel(i level)               Deprecated=true; sets Level
//	Echo(v value) -> (v value)
//	signal Changed(s what)          emitted with the property's name after any change
//
// org.opdbus.Test1.Settings: Mode s read ("normal"), changed only by
// SetMode(s mode, b interactive) (normal|eco|turbo, else
// org.opdbus.Test1.Error.InvalidMode); Verbose b readwrite (false); Limit u
// readwrite (10, at most 1000, else InvalidArgs).
//
// Properties.Set on a readwrite property stores the value and, if it
// changed, emits PropertiesChanged (with the value, or only the name for
// EmitsChangedSignal=invalidates). It fails with
// org.freedesktop.DBus.Error.PropertyReadOnly on a read-only property,
// InvalidArgs on a variant of the wrong type, UnknownProperty and
// UnknownInterface. GetManagedObjects on the root lists every item and the
// settings object with all their interfaces (standard ones with an empty
// dict) and property values. InterfacesAdded/InterfacesRemoved are declared
// but never emitted: the objects do not change.
//
// ServeBad exports BadName, a misbehaving service (see ServeBad).
//
// Serve the two services on separate connections when a client walks a
// whole name (busctl tree): objects belong to a connection, not to a name,
// so on a shared connection "/org/opdbus" lists both roots under either
// name, and a walk of Name would reach the hanging object.
package testservice

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

const (
	Name    = "org.opdbus.Test1"    // well-behaved service
	BadName = "org.opdbus.TestBad1" // misbehaving service
	Root    = dbus.ObjectPath("/org/opdbus/Test1")
)

// Interfaces and errors of the well-behaved service.
const (
	ItemIface        = "org.opdbus.Test1.Item"
	SettingsIface    = "org.opdbus.Test1.Settings"
	ErrorInvalidMode = "org.opdbus.Test1.Error.InvalidMode"
	SettingsPath     = Root + "/settings"
)

// Options configure Serve.
type Options struct {
	Items int // number of item objects (default 1000)
}

// Service is the well-behaved service, see the package doc.
type Service struct {
	conn    *dbus.Conn
	mu      sync.RWMutex // guards all property values
	ex      exports
	managed []*object // items, then settings
	paths   []dbus.ObjectPath

	closeOnce sync.Once
	closeErr  error
}

// ItemPath returns the path of item i.
func ItemPath(i int) dbus.ObjectPath {
	return dbus.ObjectPath(fmt.Sprintf("%s/items/g%02d/s%02d/item%04d", Root, i/100, i/10%10, i))
}

var itemIface = newIface(ItemIface,
	[]introspect.Method{
		{Name: "Ping", Args: []introspect.Arg{{Name: "reply", Type: "s", Direction: "out"}}},
		{Name: "SetLevel", Args: []introspect.Arg{{Name: "level", Type: "i", Direction: "in"}},
			Annotations: []introspect.Annotation{{Name: annDeprecated, Value: "true"}}},
		{Name: "Echo", Args: []introspect.Arg{
			{Name: "value", Type: "v", Direction: "in"},
			{Name: "value", Type: "v", Direction: "out"},
		}},
	},
	[]introspect.Signal{{Name: "Changed", Args: []introspect.Arg{{Name: "what", Type: "s"}}}},
	&property{name: "Name", sig: "s", emit: "const"},
	&property{name: "Index", sig: "u", emit: "const"},
	&property{name: "Enabled", sig: "b", write: true},
	&property{name: "Level", sig: "i", write: true},
	&property{name: "Label", sig: "s", write: true, emit: "invalidates"},
	&property{name: "Ratio", sig: "d", emit: "false"},
	&property{name: "Big", sig: "t"},
	&property{name: "Small", sig: "n", annots: []introspect.Annotation{{Name: annDeprecated, Value: "true"}}},
	&property{name: "Byte", sig: "y"},
	&property{name: "Tags", sig: "as"},
	&property{name: "Attrs", sig: "a{sv}"},
	&property{name: "Owner", sig: "o"},
	&property{name: "Blob", sig: "ay"},
	&property{name: "Pair", sig: "(si)"},
	&property{name: "Any", sig: "v"},
	&property{name: "Sig", sig: "g"},
)

var settingsIface = newIface(SettingsIface,
	[]introspect.Method{
		{Name: "SetMode", Args: []introspect.Arg{
			{Name: "mode", Type: "s", Direction: "in"},
			{Name: "interactive", Type: "b", Direction: "in"},
		}},
	},
	nil,
	&property{name: "Mode", sig: "s"},
	&property{name: "Verbose", sig: "b", write: true},
	&property{name: "Limit", sig: "u", write: true, check: func(v any) *dbus.Error {
		if n := v.(uint32); n > 1000 {
			return newErr(errInvalidArgs, "Limit %d is above 1000", n)
		}
		return nil
	}},
)

// pair is the Go form of Item.Pair (si).
type pair struct {
	S string
	I int32
}

// dictEntry is an a{sv} entry. An array of them has the wire format of an
// a{sv}, in their order.
type dictEntry struct {
	K string
	V dbus.Variant
}

var asvSig = dbus.SignatureOf(map[string]dbus.Variant{})

// sortedDict returns m as a variant of type a{sv} whose entries go on the
// wire sorted by key: godbus sends a Go map in random order, which would
// make busctl's rendering of a value differ between two reads.
func sortedDict(m map[string]dbus.Variant) dbus.Variant {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	es := make([]dictEntry, len(keys))
	for i, k := range keys {
		es[i] = dictEntry{k, m[k]}
	}
	return dbus.MakeVariantWithSignature(es, asvSig)
}

// itemValues returns the initial property values of item i.
func itemValues(i int) map[string]any {
	name := fmt.Sprintf("item%04d", i)
	tags := []string{}
	for k := 0; k < i%4; k++ {
		tags = append(tags, fmt.Sprintf("tag%d", k))
	}
	var anyv any
	switch i % 3 {
	case 0:
		anyv = fmt.Sprintf("any%04d", i)
	case 1:
		anyv = uint32(i)
	default:
		anyv = []int32{int32(i), -int32(i)}
	}
	owner := ItemPath(i)
	owner = owner[:len(owner)-len(name)-1]
	return map[string]any{
		"Name":    name,
		"Index":   uint32(i),
		"Enabled": i%2 == 0,
		"Level":   int32(i%100 - 50),
		"Label":   fmt.Sprintf("Item %d (ü)", i),
		"Ratio":   float64(i) / 7,
		"Big":     uint64(1)<<40 + uint64(i),
		"Small":   int16(-(i % 30000)),
		"Byte":    byte(i),
		"Tags":    tags,
		"Attrs": sortedDict(map[string]dbus.Variant{
			"label":  dbus.MakeVariant(name),
			"index":  dbus.MakeVariant(int32(i)),
			"even":   dbus.MakeVariant(i%2 == 0),
			"list":   dbus.MakeVariant([]string{"a", "b", name}),
			"nested": sortedDict(map[string]dbus.Variant{"depth": dbus.MakeVariant(uint32(2)), "kind": dbus.MakeVariant("nested")}),
		}),
		"Owner": owner,
		"Blob":  []byte{0, byte(i), byte(i >> 8), 255},
		"Pair":  pair{name, int32(i)},
		"Any":   dbus.MakeVariant(anyv),
		"Sig":   asvSig,
	}
}

// item implements org.opdbus.Test1.Item.
type item struct {
	o *object
	i int
}

func (it item) Ping() (string, *dbus.Error) {
	return fmt.Sprintf("pong item%04d", it.i), nil
}

func (it item) SetLevel(level int32) *dbus.Error {
	it.o.set(ItemIface, "Level", level)
	return nil
}

func (it item) Echo(v dbus.Variant) (dbus.Variant, *dbus.Error) {
	return v, nil
}

// settings implements org.opdbus.Test1.Settings.
type settings struct{ o *object }

func (s settings) SetMode(mode string, interactive bool) *dbus.Error {
	switch mode {
	case "normal", "eco", "turbo":
	default:
		return newErr(ErrorInvalidMode, "Invalid mode %q: want normal, eco or turbo", mode)
	}
	s.o.set(SettingsIface, "Mode", mode)
	return nil
}

// objectManager implements org.freedesktop.DBus.ObjectManager on Root.
type objectManager struct{ s *Service }

func (m objectManager) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	r := make(map[dbus.ObjectPath]map[string]map[string]dbus.Variant, len(m.s.managed))
	for _, o := range m.s.managed {
		r[o.path] = o.managed()
	}
	return r, nil
}

// Serve exports everything on conn (a connection to some bus) and requests
// Name (DBUS_NAME_FLAG_DO_NOT_QUEUE; error if not primary owner). Objects
// are exported before the name is requested, so they are all there once a
// client sees the name.
func Serve(conn *dbus.Conn, opts Options) (*Service, error) {
	n := opts.Items
	if n == 0 {
		n = 1000
	}
	if n < 0 {
		return nil, fmt.Errorf("testservice: Items %d < 0", n)
	}
	if err := claim(conn, Root); err != nil {
		return nil, err
	}
	s := &Service{conn: conn, ex: exports{conn: conn}}
	if err := s.export(n); err != nil {
		s.ex.unexportAll()
		unclaim(conn, Root)
		return nil, err
	}
	if err := requestName(conn, Name); err != nil {
		s.ex.unexportAll()
		unclaim(conn, Root)
		return nil, err
	}
	return s, nil
}

func requestName(conn *dbus.Conn, name string) error {
	r, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("testservice: request %s: %w", name, err)
	}
	if r != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("testservice: request %s: %v, not primary owner", name, r)
	}
	return nil
}

func (s *Service) export(n int) error {
	conn := s.conn
	std := []string{ifaceProperties, ifaceIntrospect, ifacePeer}
	itemXML := ""
	children := map[dbus.ObjectPath][]string{} // node -> child names

	for i := 0; i < n; i++ {
		p := ItemPath(i)
		o := &object{conn: conn, mu: &s.mu, path: p, ifaces: []*ifaceDef{itemIface}, std: std}
		o.init(ItemIface, itemValues(i))
		o.changed = func(_, prop string) { _ = conn.Emit(p, ItemIface+".Changed", prop) }
		if itemXML == "" {
			itemXML = nodeXML(o.introspection(), nil)
		}
		if err := o.export(&s.ex, itemXML); err != nil {
			return err
		}
		if err := s.ex.export(item{o, i}, p, ItemIface); err != nil {
			return err
		}
		s.managed = append(s.managed, o)
		s.addNode(children, p)
	}

	so := &object{conn: conn, mu: &s.mu, path: SettingsPath, ifaces: []*ifaceDef{settingsIface}, std: std}
	so.init(SettingsIface, map[string]any{"Mode": "normal", "Verbose": false, "Limit": uint32(10)})
	if err := so.export(&s.ex, nodeXML(so.introspection(), nil)); err != nil {
		return err
	}
	if err := s.ex.export(settings{so}, SettingsPath, SettingsIface); err != nil {
		return err
	}
	s.managed = append(s.managed, so)
	s.addNode(children, SettingsPath)

	root := &object{conn: conn, mu: &s.mu, path: Root,
		std: []string{ifaceObjectManager, ifaceProperties, ifaceIntrospect, ifacePeer}}
	if err := root.export(&s.ex, nodeXML(root.introspection(), children[Root])); err != nil {
		return err
	}
	if err := s.ex.export(objectManager{s}, Root, ifaceObjectManager); err != nil {
		return err
	}

	// Intermediate nodes: Introspectable only (and Peer, from godbus).
	// Every node with children but not itself an object above is one.
	inter := []introspect.Interface{introspect.IntrospectData, introspect.PeerData}
	for p, c := range children {
		if p == Root || len(c) == 0 {
			continue
		}
		if err := s.ex.export(introspect.Introspectable(nodeXML(inter, c)), p, ifaceIntrospect); err != nil {
			return err
		}
	}

	for p := range children {
		s.paths = append(s.paths, p)
	}
	for _, a := range ancestors(Root) {
		s.paths = append(s.paths, a)
	}
	sort.Slice(s.paths, func(i, j int) bool { return s.paths[i] < s.paths[j] })
	return nil
}

// addNode records p and its ancestors up to Root in children (node ->
// child names); leaves get a nil entry.
func (s *Service) addNode(children map[dbus.ObjectPath][]string, p dbus.ObjectPath) {
	if _, ok := children[p]; ok {
		return
	}
	children[p] = nil
	for p != Root {
		as := ancestors(p)
		parent := as[len(as)-1]
		name := child(parent, p)
		_, seen := children[parent]
		children[parent] = append(children[parent], name)
		if seen {
			return
		}
		p = parent
	}
}

// Paths returns every object path the service exports, sorted: those that
// answer Introspect from "/" down, as `busctl tree --list` prints them.
func (s *Service) Paths() []dbus.ObjectPath {
	return append([]dbus.ObjectPath(nil), s.paths...)
}

// Close releases the name and unexports everything. It is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.conn.Connected() {
			if _, err := s.conn.ReleaseName(Name); err != nil && !errors.Is(err, dbus.ErrClosed) {
				s.closeErr = fmt.Errorf("testservice: release %s: %w", Name, err)
			}
		}
		s.ex.unexportAll()
		unclaim(s.conn, Root)
	})
	return s.closeErr
}
