package testservice

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect returns a new connection to b, closed at cleanup.
func connect(t *testing.T, b *testbed.Bus) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(b.Address) // Auth + Hello
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serve starts a bus and serves the service with n items on its own
// connection; it returns the bus, a separate client connection and the
// service.
func serve(t *testing.T, n int) (*testbed.Bus, *dbus.Conn, *Service) {
	t.Helper()
	b := testbed.NewBus(t)
	conn := connect(t, b)
	start := time.Now()
	s, err := Serve(conn, Options{Items: n})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Serve (Items %d): %v", n, time.Since(start))
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, connect(t, b), s
}

func busctl(t *testing.T, b *testbed.Bus, args ...string) string {
	t.Helper()
	out, err := b.Busctl(ctxT(t, time.Minute), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func dbusErrName(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dep *dbus.Error
	if errors.As(err, &dep) {
		return dep.Name
	}
	return ""
}

func wantErr(t *testing.T, what string, err error, name string) {
	t.Helper()
	if got := dbusErrName(err); got != name {
		t.Errorf("%s: error %v (name %q), want %s", what, err, got, name)
	}
}

func TestServe(t *testing.T) {
	b, client, s := serve(t, 0) // default: 1000 items

	paths := s.Paths()
	if len(paths) != 1000+100+10+1+1+1+3 {
		t.Errorf("%d paths, want 1116 (1000 items, 100 subgroups, 10 groups, items, settings, root, 3 ancestors)", len(paths))
	}
	if !sort.SliceIsSorted(paths, func(i, j int) bool { return paths[i] < paths[j] }) {
		t.Error("Paths not sorted")
	}
	if got := strings.Count(string(ItemPath(42)), "/"); got < 5 {
		t.Errorf("item depth %d < 5", got)
	}

	// The independent client's view of the tree is exactly Paths.
	start := time.Now()
	out := busctl(t, b, "tree", "--list", Name)
	t.Logf("busctl tree --list: %v", time.Since(start))
	var tree []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		tree = append(tree, strings.TrimSpace(l))
	}
	sort.Strings(tree)
	var want []string
	for _, p := range paths {
		want = append(want, string(p))
	}
	if !reflect.DeepEqual(tree, want) {
		t.Errorf("busctl tree --list:\n%s\nwant Paths:\n%s", strings.Join(tree, "\n"), strings.Join(want, "\n"))
	}

	// Properties, their values and annotations, as busctl shows them.
	out = busctl(t, b, "introspect", Name, string(ItemPath(42)))
	for _, l := range []string{
		`.Name property s "item0042" const`,
		`.Index property u 42 const`,
		`.Enabled property b true emits-change writable`,
		`.Level property i -8 emits-change writable`,
		`.Label property s "Item 42 (\303\274)" emits-invalidation writable`,
		`.Ratio property d 6 -`,
		`.Big property t 1099511627818 emits-change`,
		`.Small property n -42 deprecated emits-change`,
		`.Byte property y 42 emits-change`,
		`.Tags property as 2 "tag0" "tag1" emits-change`,
		`.Attrs property a{sv} 5 "even" b true "index" i 42 "label" s "item0042" "list" as 3 "a" "b" "item0042" "nested" a{sv} 2 "depth" u 2 "kind" s "nested" emits-change`,
		`.Owner property o "/org/opdbus/Test1/items/g00/s04" emits-change`,
		`.Blob property ay 4 0 42 0 255 emits-change`,
		`.Sig property g "a{sv}" emits-change`,
		`.SetLevel method i - deprecated`,
		`.Echo method v v -`,
		`.Ping method - s -`,
		`.Changed signal s - -`,
	} {
		if !containsLine(out, l) {
			t.Errorf("busctl introspect %s: no line %q in:\n%s", ItemPath(42), l, out)
		}
	}
	// busctl introspect does not render v and (si) values; get-property does.
	out = busctl(t, b, "get-property", Name, string(ItemPath(42)), ItemIface, "Pair", "Any")
	if want := "(si) \"item0042\" 42\nv s \"any0042\"\n"; out != want {
		t.Errorf("get-property Pair Any = %q, want %q", out, want)
	}
	out = busctl(t, b, "get-property", Name, string(ItemPath(43)), ItemIface, "Any", "Tags")
	if want := "v u 43\nas 3 \"tag0\" \"tag1\" \"tag2\"\n"; out != want {
		t.Errorf("get-property item43 Any Tags = %q, want %q", out, want)
	}

	// GetManagedObjects lists every item and the settings object with all
	// their interfaces.
	out = busctl(t, b, "--json=short", "call", Name, string(Root), ifaceObjectManager, "GetManagedObjects")
	var mo struct {
		Type string
		Data []map[string]map[string]map[string]struct {
			Type string
			Data any
		}
	}
	if err := json.Unmarshal([]byte(out), &mo); err != nil || len(mo.Data) != 1 {
		t.Fatalf("GetManagedObjects: %v: %.300s", err, out)
	}
	objs := mo.Data[0]
	if mo.Type != "a{oa{sa{sv}}}" || len(objs) != 1001 {
		t.Errorf("GetManagedObjects: type %s, %d objects, want 1001", mo.Type, len(objs))
	}
	for p, ifs := range objs {
		if len(ifs) != 4 || ifs[ifaceProperties] == nil || ifs[ifaceIntrospect] == nil || ifs[ifacePeer] == nil {
			t.Errorf("GetManagedObjects %s: interfaces %v", p, reflect.ValueOf(ifs).MapKeys())
			break
		}
	}
	if it := objs[string(ItemPath(42))][ItemIface]; len(it) != 16 || it["Name"].Data != "item0042" || it["Pair"].Type != "(si)" {
		t.Errorf("GetManagedObjects item0042: %v", it)
	}
	if st := objs[string(SettingsPath)][SettingsIface]; len(st) != 3 || st["Mode"].Data != "normal" || st["Limit"].Data != float64(10) {
		t.Errorf("GetManagedObjects settings: %v", st)
	}

	// Setting properties: Verbose through Properties.Set, Mode only
	// through SetMode.
	busctl(t, b, "set-property", Name, string(SettingsPath), SettingsIface, "Verbose", "b", "true")
	if out := busctl(t, b, "get-property", Name, string(SettingsPath), SettingsIface, "Verbose"); out != "b true\n" {
		t.Errorf("Verbose after set-property = %q", out)
	}
	out, err := b.Busctl(ctxT(t, time.Minute), "set-property", Name, string(SettingsPath), SettingsIface, "Mode", "s", "eco")
	if err == nil || !strings.Contains(out, "read-only") {
		t.Errorf("set-property Mode: %v %q, want a read-only error", err, out)
	}
	busctl(t, b, "call", Name, string(SettingsPath), SettingsIface, "SetMode", "sb", "eco", "true")
	if out := busctl(t, b, "get-property", Name, string(SettingsPath), SettingsIface, "Mode"); out != "s \"eco\"\n" {
		t.Errorf("Mode after SetMode = %q", out)
	}

	// Error names, through godbus.
	ctx := ctxT(t, time.Minute)
	settings := client.Object(Name, SettingsPath)
	item := client.Object(Name, ItemPath(7))
	set := func(o dbus.BusObject, iface, prop string, v any) error {
		return o.CallWithContext(ctx, ifaceProperties+".Set", 0, iface, prop, dbus.MakeVariant(v)).Err
	}
	wantErr(t, "Set Mode", set(settings, SettingsIface, "Mode", "eco"), errPropertyReadOnly)
	wantErr(t, "Set Name", set(item, ItemIface, "Name", "x"), errPropertyReadOnly)
	wantErr(t, "Set Verbose to a string", set(settings, SettingsIface, "Verbose", "yes"), errInvalidArgs)
	wantErr(t, "Set Limit to an int32", set(settings, SettingsIface, "Limit", int32(5)), errInvalidArgs)
	wantErr(t, "Set Limit 5000", set(settings, SettingsIface, "Limit", uint32(5000)), errInvalidArgs)
	wantErr(t, "Set Nope", set(settings, SettingsIface, "Nope", true), errUnknownProperty)
	wantErr(t, "Set on an unknown interface", set(settings, "org.opdbus.Nope", "Verbose", true), errUnknownInterface)
	wantErr(t, "Get on an unknown interface", settings.CallWithContext(ctx, ifaceProperties+".Get", 0, "org.opdbus.Nope", "Verbose").Err, errUnknownInterface)
	wantErr(t, "SetMode bogus", settings.CallWithContext(ctx, SettingsIface+".SetMode", 0, "bogus", false).Err, ErrorInvalidMode)
	if err := set(settings, SettingsIface, "Limit", uint32(1000)); err != nil {
		t.Errorf("Set Limit 1000: %v", err)
	}
	if err := set(item, ItemIface, "Level", int32(77)); err != nil {
		t.Errorf("Set Level: %v", err)
	}
	var v dbus.Variant
	if err := item.CallWithContext(ctx, ifaceProperties+".Get", 0, ItemIface, "Level").Store(&v); err != nil || v.Value() != int32(77) {
		t.Errorf("Level after Set = %v %v", v, err)
	}
	var reply string
	if err := item.CallWithContext(ctx, ItemIface+".Ping", 0).Store(&reply); err != nil || reply != "pong item0007" {
		t.Errorf("Ping = %q %v", reply, err)
	}
	in := dbus.MakeVariant(map[string]dbus.Variant{"x": dbus.MakeVariant([]int32{1, 2})})
	if err := item.CallWithContext(ctx, ItemIface+".Echo", 0, in).Store(&v); err != nil || !reflect.DeepEqual(v, in) {
		t.Errorf("Echo(%v) = %v %v", in, v, err)
	}
}

// containsLine reports whether out has a line equal to want after
// collapsing runs of spaces.
func containsLine(out, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(l), " ") == want {
			return true
		}
	}
	return false
}

// TestIntrospectionMatchesExports checks every node's XML: it parses, it
// lists the node's children in Paths, every declared method exists (a call
// with one argument too many fails with InvalidArgs, not UnknownMethod or
// UnknownInterface), every declared property has its declared type, and
// GetAll returns exactly the declared properties.
func TestIntrospectionMatchesExports(t *testing.T) {
	_, client, s := serve(t, 150)
	ctx := ctxT(t, 2*time.Minute)
	paths := s.Paths()
	children := map[dbus.ObjectPath][]string{}
	for _, p := range paths {
		if p == "/" {
			continue
		}
		as := ancestors(p)
		parent := as[len(as)-1]
		children[parent] = append(children[parent], child(parent, p))
	}
	for _, p := range paths {
		o := client.Object(Name, p)
		var doc string
		if err := o.CallWithContext(ctx, ifaceIntrospect+".Introspect", 0).Store(&doc); err != nil {
			t.Fatalf("%s: Introspect: %v", p, err)
		}
		if !strings.HasPrefix(doc, "<!DOCTYPE node PUBLIC") {
			t.Errorf("%s: no DOCTYPE", p)
		}
		var n introspect.Node
		if err := xml.Unmarshal([]byte(doc), &n); err != nil {
			t.Fatalf("%s: invalid XML: %v\n%s", p, err, doc)
		}
		var kids []string
		for _, c := range n.Children {
			kids = append(kids, c.Name)
		}
		if !reflect.DeepEqual(kids, children[p]) {
			t.Errorf("%s: children %v, want %v", p, kids, children[p])
		}
		declared := map[string]bool{}
		for _, i := range n.Interfaces {
			declared[i.Name] = true
			for _, m := range i.Methods {
				var args []any
				for _, a := range m.Args {
					if a.Direction == "in" {
						args = append(args, "")
					}
				}
				args = append(args, "extra")
				err := o.CallWithContext(ctx, i.Name+"."+m.Name, 0, args...).Err
				if i.Name == ifacePeer {
					continue // godbus's Peer ignores arguments
				}
				wantErr(t, string(p)+" "+i.Name+"."+m.Name+" with a bad argument", err, errInvalidArgs)
			}
			if len(i.Properties) == 0 {
				continue
			}
			// Body, not Store: Store into map[string]dbus.Variant
			// unwraps a v inside the v and loses (si)'s signature.
			c := o.CallWithContext(ctx, ifaceProperties+".GetAll", 0, i.Name)
			if c.Err != nil {
				t.Fatalf("%s: GetAll %s: %v", p, i.Name, c.Err)
			}
			all := c.Body[0].(map[string]dbus.Variant)
			if len(all) != len(i.Properties) {
				t.Errorf("%s: GetAll %s returned %d properties, %d declared", p, i.Name, len(all), len(i.Properties))
			}
			for _, pr := range i.Properties {
				v, ok := all[pr.Name]
				if !ok || v.Signature().String() != pr.Type {
					t.Errorf("%s: %s.%s declared %s, GetAll has %v", p, i.Name, pr.Name, pr.Type, v)
				}
			}
		}
		for _, std := range []string{ifaceIntrospect, ifacePeer} {
			if !declared[std] {
				t.Errorf("%s: %s not declared", p, std)
			}
		}
		// Undeclared standard interfaces are not implemented.
		if !declared[ifaceProperties] {
			wantErr(t, string(p)+" GetAll", o.CallWithContext(ctx, ifaceProperties+".GetAll", 0, "").Err, "org.freedesktop.DBus.Error.UnknownInterface")
		}
		if !declared[ifaceObjectManager] {
			wantErr(t, string(p)+" GetManagedObjects", o.CallWithContext(ctx, ifaceObjectManager+".GetManagedObjects", 0).Err, "org.freedesktop.DBus.Error.UnknownInterface")
		}
	}
}

func TestSignals(t *testing.T) {
	_, client, _ := serve(t, 20)
	ctx := ctxT(t, time.Minute)
	if err := client.AddMatchSignalContext(ctx, dbus.WithMatchSender(Name)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 100)
	client.Signal(ch)
	next := func() *dbus.Signal {
		t.Helper()
		select {
		case s := <-ch:
			return s
		case <-ctx.Done():
			t.Fatal("no signal")
		}
		return nil
	}
	// NameAcquired and the like come from the bus, not Name: skip them.
	nextFrom := func(path dbus.ObjectPath) *dbus.Signal {
		t.Helper()
		for {
			if s := next(); s.Path == path {
				return s
			}
		}
	}
	set := func(path dbus.ObjectPath, iface, prop string, v any) {
		t.Helper()
		if err := client.Object(Name, path).CallWithContext(ctx, ifaceProperties+".Set", 0, iface, prop, dbus.MakeVariant(v)).Err; err != nil {
			t.Fatal(err)
		}
	}
	changed := func(s *dbus.Signal, iface string, props map[string]dbus.Variant, inval []string) {
		t.Helper()
		want := []any{iface, props, inval}
		if s.Name != ifaceProperties+".PropertiesChanged" || !reflect.DeepEqual(s.Body, want) {
			t.Errorf("signal %s %v, want PropertiesChanged %v", s.Name, s.Body, want)
		}
	}

	// Setting a property to its value emits nothing: the first signal is
	// the one of the real change.
	set(SettingsPath, SettingsIface, "Verbose", false)
	set(SettingsPath, SettingsIface, "Verbose", true)
	changed(nextFrom(SettingsPath), SettingsIface, map[string]dbus.Variant{"Verbose": dbus.MakeVariant(true)}, []string{})
	if err := client.Object(Name, SettingsPath).CallWithContext(ctx, SettingsIface+".SetMode", 0, "turbo", false).Err; err != nil {
		t.Fatal(err)
	}
	changed(nextFrom(SettingsPath), SettingsIface, map[string]dbus.Variant{"Mode": dbus.MakeVariant("turbo")}, []string{})

	item := ItemPath(3)
	set(item, ItemIface, "Label", "new label") // EmitsChangedSignal=invalidates
	changed(nextFrom(item), ItemIface, map[string]dbus.Variant{}, []string{"Label"})
	if s := nextFrom(item); s.Name != ItemIface+".Changed" || !reflect.DeepEqual(s.Body, []any{"Label"}) {
		t.Errorf("signal %s %v, want Changed Label", s.Name, s.Body)
	}
	if err := client.Object(Name, item).CallWithContext(ctx, ItemIface+".SetLevel", 0, int32(12)).Err; err != nil {
		t.Fatal(err)
	}
	changed(nextFrom(item), ItemIface, map[string]dbus.Variant{"Level": dbus.MakeVariant(int32(12))}, []string{})
	if s := nextFrom(item); s.Name != ItemIface+".Changed" || !reflect.DeepEqual(s.Body, []any{"Level"}) {
		t.Errorf("signal %s %v, want Changed Level", s.Name, s.Body)
	}
}

func TestBad(t *testing.T) {
	b, client, _ := serve(t, 10)
	badConn := connect(t, b)
	closeBad, err := ServeBad(badConn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := closeBad(); err != nil {
			t.Errorf("close bad: %v", err)
		}
	})
	ctx := ctxT(t, 3*time.Minute)

	// A call to hang is held...
	held := client.Object(BadName, HangPath).Go(ifaceIntrospect+".Introspect", 0, make(chan *dbus.Call, 1))
	heldGetAll := client.Object(BadName, HangPath).Go(ifaceProperties+".GetAll", 0, make(chan *dbus.Call, 1), "")

	// ...busctl times out on it...
	for _, args := range [][]string{
		{"call", BadName, string(HangPath), ifaceIntrospect, "Introspect"},
		{"call", BadName, string(HangPath), ifaceProperties, "GetAll", "s", ""},
	} {
		start := time.Now()
		out, err := b.Busctl(ctx, append([]string{"--timeout=1"}, args...)...)
		d := time.Since(start)
		if err == nil || !strings.Contains(out, "timed out") || d > 10*time.Second {
			t.Errorf("busctl --timeout=1 %v: %v after %v:\n%s", args, err, d, out)
		}
	}
	// (busctl introspect ignores --timeout; sd-bus's SYSTEMD_BUS_TIMEOUT
	// applies to it.)
	start := time.Now()
	short := &testbed.Bus{Address: b.Address, Env: append(append([]string(nil), b.Env...), "SYSTEMD_BUS_TIMEOUT=1")}
	out, err := short.Busctl(ctx, "introspect", BadName, string(HangPath))
	if d := time.Since(start); err == nil || !strings.Contains(out, "timed out") || d > 10*time.Second {
		t.Errorf("SYSTEMD_BUS_TIMEOUT=1 busctl introspect hang: %v after %v:\n%s", err, d, out)
	}

	// ...while the good service and the bad service's other objects answer.
	if out := busctl(t, b, "call", Name, string(ItemPath(1)), ItemIface, "Ping"); out != "s \"pong item0001\"\n" {
		t.Errorf("Ping = %q", out)
	}
	busctl(t, b, "call", Name, string(Root), ifacePeer, "Ping")
	busctl(t, b, "call", BadName, string(HangPath), ifacePeer, "Ping")
	var doc string
	if err := client.Object(BadName, BadRoot).CallWithContext(ctx, ifaceIntrospect+".Introspect", 0).Store(&doc); err != nil {
		t.Fatal(err)
	}
	var n introspect.Node
	if err := xml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, c := range n.Children {
		kids = append(kids, c.Name)
	}
	if want := []string{"denied", "hang", "huge", "malformed"}; !reflect.DeepEqual(kids, want) {
		t.Errorf("%s children %v, want %v", BadRoot, kids, want)
	}

	err = client.Object(BadName, DeniedPath).CallWithContext(ctx, ifaceIntrospect+".Introspect", 0).Store(&doc)
	wantErr(t, "Introspect denied", err, errAccessDenied)
	out, err = b.Busctl(ctx, "introspect", BadName, string(DeniedPath))
	if err == nil || !strings.Contains(out, "Access denied") {
		t.Errorf("busctl introspect denied: %v\n%s", err, out)
	}

	if err := client.Object(BadName, MalformedPath).CallWithContext(ctx, ifaceIntrospect+".Introspect", 0).Store(&doc); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal([]byte(doc), &n); err == nil {
		t.Errorf("malformed XML parses:\n%s", doc)
	}
	if out, err := b.Busctl(ctx, "introspect", BadName, string(MalformedPath)); err == nil {
		t.Errorf("busctl introspect malformed succeeded:\n%s", out)
	}

	// huge: busctl (sd-bus's parser, independent of ours) parses all of
	// it, printing only the Peer interface.
	if testing.Short() {
		t.Log("-short: huge skipped")
	} else {
		start := time.Now()
		// busctl introspect ignores --timeout and gives up after 25 s, which
		// a loaded machine can exceed for 100 MB; sd-bus honours this.
		long := &testbed.Bus{Address: b.Address, Env: append(append([]string(nil), b.Env...), "SYSTEMD_BUS_TIMEOUT=300")}
		out, err := long.Busctl(ctx, "introspect", BadName, string(HugePath), ifacePeer)
		if err != nil || !containsLine(out, ".Ping method - - -") {
			t.Errorf("busctl introspect huge: %v\n%.2000s", err, out)
		}
		t.Logf("busctl introspect huge: %v", time.Since(start))
		x := hugeXML()
		if len(x) != HugeSize {
			t.Errorf("huge: %d bytes, want %d", len(x), HugeSize)
		}
	}

	// The held calls are still pending, and closing releases them.
	select {
	case c := <-held.Done:
		t.Fatalf("held call returned: %v", c.Err)
	case c := <-heldGetAll.Done:
		t.Fatalf("held call returned: %v", c.Err)
	default:
	}
	if err := closeBad(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*dbus.Call{<-held.Done, <-heldGetAll.Done} {
		wantErr(t, "held call after close", c.Err, ErrorClosed)
	}
	if out, err := b.Busctl(ctx, "status", BadName); err == nil {
		t.Errorf("%s still owned after close:\n%s", BadName, out)
	}
}

// TestSharedConn serves both services on one connection.
func TestSharedConn(t *testing.T) {
	b := testbed.NewBus(t)
	conn := connect(t, b)
	client := connect(t, b)
	ctx := ctxT(t, time.Minute)
	children := func(p dbus.ObjectPath) []string {
		t.Helper()
		var doc string
		// The unique name: Name is gone after Close.
		if err := client.Object(conn.Names()[0], p).CallWithContext(ctx, ifaceIntrospect+".Introspect", 0).Store(&doc); err != nil {
			t.Fatal(err)
		}
		var n introspect.Node
		if err := xml.Unmarshal([]byte(doc), &n); err != nil {
			t.Fatal(err)
		}
		var kids []string
		for _, c := range n.Children {
			kids = append(kids, c.Name)
		}
		return kids
	}

	s, err := Serve(conn, Options{Items: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(conn, Options{Items: 3}); err == nil {
		t.Error("second Serve on one connection succeeded")
	}
	closeBad, err := ServeBad(conn)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := children("/org/opdbus"), []string{"Test1", "TestBad1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("/org/opdbus children %v, want %v", got, want)
	}
	if err := closeBad(); err != nil {
		t.Fatal(err)
	}
	if got, want := children("/org/opdbus"), []string{"Test1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after closing bad: /org/opdbus children %v, want %v", got, want)
	}
	if got := len(children(Root + "/items/g00/s00")); got != 3 {
		t.Errorf("3 items: s00 has %d children", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := children("/"); len(got) != 0 {
		t.Errorf("after Close: / children %v", got)
	}
	if out, err := b.Busctl(ctx, "status", Name); err == nil {
		t.Errorf("%s still owned after Close:\n%s", Name, out)
	}
	// Serve again after Close.
	s, err = Serve(conn, Options{Items: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestServeNameTaken(t *testing.T) {
	b := testbed.NewBus(t)
	other := connect(t, b)
	if r, err := other.RequestName(Name, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatal(r, err)
	}
	conn := connect(t, b)
	if s, err := Serve(conn, Options{Items: 2}); err == nil {
		s.Close()
		t.Fatal("Serve succeeded with the name taken")
	}
	if _, err := other.ReleaseName(Name); err != nil {
		t.Fatal(err)
	}
	s, err := Serve(conn, Options{Items: 2}) // the failed Serve left nothing behind
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(conn, Options{Items: -1}); err == nil {
		t.Error("Items -1 accepted")
	}
}

// TestBaseline measures what another engineer benchmarks op-dbus
// against: Serve with 1000 items, busctl tree, and busctl introspect of
// every object (one busctl process each, sequentially).
func TestBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	b, _, s := serve(t, 1000)
	ctx := ctxT(t, 10*time.Minute)
	start := time.Now()
	if _, err := b.Busctl(ctx, "tree", "--list", Name); err != nil {
		t.Fatal(err)
	}
	tree := time.Since(start)
	start = time.Now()
	for _, p := range s.Paths() {
		if _, err := b.Busctl(ctx, "introspect", Name, string(p)); err != nil {
			t.Fatal(err)
		}
	}
	all := time.Since(start)
	t.Logf("busctl tree: %v; busctl introspect of each of %d objects: %v (%v each)",
		tree, len(s.Paths()), all, all/time.Duration(len(s.Paths())))
}
