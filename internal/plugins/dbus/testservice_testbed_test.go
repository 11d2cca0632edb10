package dbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/testbed"
	"github.com/op-dbus/op-dbus/internal/testbed/testservice"
)

// End-to-end against internal/testbed/testservice on a private bus: writable
// properties (Properties.Set), a user mapping for a read-only one, every
// D-Bus type through query and back, and misbehaving services.

func serveTest(t *testing.T) *testbed.Bus {
	t.Helper()
	b := testbed.NewBus(t)
	conn, err := godbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := testservice.Serve(conn, testservice.Options{Items: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", b.Address)
	return b
}

func testProp(t *testing.T, b *testbed.Bus, path godbus.ObjectPath, iface, prop string) string {
	t.Helper()
	out, err := b.Busctl(context.Background(), "get-property", testservice.Name, string(path), iface, prop)
	if err != nil {
		t.Fatalf("busctl get-property %s: %v", prop, err)
	}
	return strings.TrimSpace(out)
}

const settings = `"bus":"session","service":"org.opdbus.Test1","path":"/org/opdbus/Test1/settings","interface":"org.opdbus.Test1.Settings"`

// modeMapping is a user mapping for the read-only Mode.
const modeMapping = "service: org.opdbus.Test1\ninterface: org.opdbus.Test1.Settings\nproperties:\n  Mode: {method: SetMode, args: [$value, false]}\n"

// pluginFromRegistry builds the dbus plugin as the CLI does, so the
// environment variable is what configures its mappings.
func pluginFromRegistry(t *testing.T) *Plugin {
	t.Helper()
	for _, p := range plugin.New(plugin.Options{}) {
		if p.Name() == "dbus" {
			return p.(*Plugin)
		}
	}
	t.Fatal("dbus plugin not registered")
	return nil
}

func TestTestbedTestServiceSetAndMapping(t *testing.T) {
	b := serveTest(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test1.yaml"), []byte(modeMapping), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(MappingsEnv, dir)
	r := newRig(t, pluginFromRegistry(t))

	doc := r.doc(obj(settings, `{"Verbose":true,"Limit":500,"Mode":"eco"}`))
	pl := r.mustPlan(doc)
	if len(pl.Ops) != 3 {
		t.Fatalf("ops: %v", opIDs(pl))
	}
	how := map[string]string{}
	for _, op := range pl.Ops {
		var d opData
		_ = json.Unmarshal(op.Data, &d)
		how[d.Property] = d.Method
	}
	if how["Verbose"] != methodSet || how["Limit"] != methodSet || how["Mode"] != "SetMode" {
		t.Errorf("methods: %v", how)
	}
	r.apply(doc)
	sp := testservice.SettingsPath
	for prop, want := range map[string]string{"Verbose": "b true", "Limit": "u 500", "Mode": `s "eco"`} {
		if got := testProp(t, b, sp, testservice.SettingsIface, prop); got != want {
			t.Errorf("%s: %s, want %s", prop, got, want)
		}
	}
	if pl := r.mustPlan(doc); len(pl.Ops) != 0 {
		t.Errorf("re-plan: %v", opIDs(pl))
	}
	if pl := r.mustPlan(r.requery(r.query(doc))); len(pl.Ops) != 0 {
		t.Errorf("query re-applied: %v", opIDs(pl))
	}

	// The same object through an explicit bus address.
	addr := strings.Replace(settings, `"bus":"session"`, `"bus":"`+b.Address+`"`, 1)
	r.apply(r.doc(obj(addr, `{"Limit":7}`)))
	if got := testProp(t, b, sp, testservice.SettingsIface, "Limit"); got != "u 7" {
		t.Errorf("Limit via address: %s", got)
	}

	// The service refuses a value: the op fails with its error, and the
	// earlier op of the same transaction is rolled back.
	res := r.tryApply(r.doc(obj(settings, `{"Verbose":false,"Limit":5000}`)))
	if res.Success {
		t.Fatal("Limit 5000 accepted")
	}
	wantErr(t, res.Err, "set org.opdbus.Test1.Settings.Limit of org.opdbus.Test1 /org/opdbus/Test1/settings on session bus", "Limit 5000 is above 1000", "[org.freedesktop.DBus.Error.InvalidArgs]")
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Errorf("rollback: %+v", res.Rollback)
	}
	if got := testProp(t, b, sp, testservice.SettingsIface, "Verbose"); got != "b true" {
		t.Errorf("Verbose not rolled back: %s", got)
	}
	if got := testProp(t, b, sp, testservice.SettingsIface, "Limit"); got != "u 7" {
		t.Errorf("Limit: %s", got)
	}
	res = r.tryApply(r.doc(obj(settings, `{"Mode":"bogus"}`)))
	wantErr(t, res.Err, "with SetMode (mapping "+filepath.Join(dir, "test1.yaml")+")", `Invalid mode "bogus"`, testservice.ErrorInvalidMode)
	if got := testProp(t, b, sp, testservice.SettingsIface, "Mode"); got != `s "eco"` {
		t.Errorf("Mode: %s", got)
	}

	// Without the mapping, Mode cannot be planned.
	t.Setenv(MappingsEnv, "")
	r2 := newRig(t, pluginFromRegistry(t))
	_, err := r2.plan(r2.doc(obj(settings, `{"Mode":"turbo"}`)))
	wantErr(t, err, "objects[0].properties.Mode: property Mode of org.opdbus.Test1 is read-only and no mapping sets it")
	// A wrong type changes nothing either.
	_, err = r2.plan(r2.doc(obj(settings, `{"Verbose":false,"Limit":-3}`)))
	wantErr(t, err, "objects[0].properties.Limit: expected signature u (uint32), got -3, out of range")
	if got := testProp(t, b, sp, testservice.SettingsIface, "Verbose"); got != "b true" {
		t.Errorf("Verbose: %s", got)
	}
}

// Every property type of an item: the query renders it as JSON that
// converts back to the same D-Bus value, sent over the wire (Echo) and
// compared with what the service holds.
func TestTestbedItemTypesRoundTrip(t *testing.T) {
	serveTest(t)
	r := newRig(t, New(""))
	props := []string{"Name", "Index", "Enabled", "Level", "Label", "Ratio", "Big", "Small", "Byte", "Tags", "Attrs", "Owner", "Blob", "Pair", "Any", "Sig"}
	var objs []string
	for i := 0; i < 3; i++ {
		m := map[string]int{}
		for _, p := range props {
			m[p] = 0
		}
		b, _ := json.Marshal(m)
		objs = append(objs, obj(fmt.Sprintf(`"bus":"session","service":"org.opdbus.Test1","path":%q,"interface":"org.opdbus.Test1.Item"`, testservice.ItemPath(i)), string(b)))
	}
	doc := r.doc(objs...)
	q := r.query(doc)
	for _, want := range []string{
		`"Any":"any0000"`, `"Any":{"$signature":"u","$value":1}`, `"Any":{"$signature":"ai","$value":[2,-2]}`,
		`"Pair":["item0001",1]`, `"Blob":[0,1,0,255]`, `"Big":1099511627777`, `"Small":-1`, `"Sig":"a{sv}"`,
		`"Tags":[]`, `"Tags":["tag0","tag1"]`, `"Ratio":0.14285714285714285`, `"Ratio":0.0`, `"Label":"Item 1 (ü)"`,
		`"Attrs":{"even":false,"index":{"$signature":"i","$value":1},"label":"item0001","list":["a","b","item0001"],"nested":{"depth":{"$signature":"u","$value":2},"kind":"nested"}}`,
	} {
		if !strings.Contains(q, want) {
			t.Errorf("query lacks %s:\n%s", want, q)
		}
	}
	st := r.requery(q).Plugins["dbus"].(*State)
	conn, err := r.p.conn(context.Background(), "session")
	if err != nil {
		t.Fatal(err)
	}
	in, err := r.p.introspect(context.Background(), conn, keyOf(st.Objects[0]))
	if err != nil {
		t.Fatal(err)
	}
	ii := in.Interfaces[testservice.ItemIface]
	for i, o := range st.Objects {
		obj := conn.Object(o.Service, godbus.ObjectPath(o.Path))
		for _, name := range props {
			pi := ii.Properties[name]
			v, err := fromJSONRaw(pi.Type, o.Properties[name], propPath(i, name))
			if err != nil {
				t.Errorf("%s: %v", propPath(i, name), err)
				continue
			}
			sent := godbus.MakeVariantWithSignature(v, godbus.ParseSignatureMust(pi.Type.str))
			echoed, err := wire(sent)
			if err != nil {
				t.Errorf("%s: encode: %v", propPath(i, name), err)
				continue
			}
			// Through the service too, except structs: a godbus service
			// echoing a struct in a variant re-encodes the []any it decoded
			// as an array, and the bus drops it for the malformed reply.
			if !strings.Contains(pi.Type.str, "(") {
				if err := obj.Call(testservice.ItemIface+".Echo", 0, sent).Store(&echoed); err != nil {
					t.Errorf("%s: echo: %v", propPath(i, name), err)
					continue
				}
			}
			live, err := obj.GetProperty(testservice.ItemIface + "." + name)
			if err != nil {
				t.Fatal(err)
			}
			if echoed.Signature() != live.Signature() {
				t.Errorf("%s: sent as %s, the property is %s", propPath(i, name), echoed.Signature(), live.Signature())
			}
			a, _ := canonical(pi.Type, echoed.Value())
			b, _ := canonical(pi.Type, live.Value())
			if a != b {
				t.Errorf("%s: round trip %s, live %s", propPath(i, name), a, b)
			}
		}
	}
	// Writable ones of other types than the settings: i and s (with UTF-8).
	path := testservice.ItemPath(3)
	item := fmt.Sprintf(`"bus":"session","service":"org.opdbus.Test1","path":%q,"interface":"org.opdbus.Test1.Item"`, path)
	d := r.doc(obj(item, `{"Level":-2147483648,"Label":"naïve ✓","Enabled":true}`))
	r.apply(d)
	if pl := r.mustPlan(d); len(pl.Ops) != 0 {
		t.Errorf("re-plan: %v", opIDs(pl))
	}
	if q := r.query(d); !strings.Contains(q, `"Level":-2147483648`) || !strings.Contains(q, `"Label":"naïve ✓"`) {
		t.Errorf("query: %s", q)
	}
}

// A service that never answers, one that sends malformed or oversized
// introspection, one that denies it: each a clear error in bounded time.
func TestTestbedMisbehavingServices(t *testing.T) {
	b := serveTest(t)
	conn, err := godbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stop, err := testservice.ServeBad(conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	p := New("")
	p.timeout = 2 * time.Second
	r := newRig(t, p)
	bad := func(path godbus.ObjectPath) string {
		return obj(fmt.Sprintf(`"bus":"session","service":%q,"path":%q,"interface":"org.opdbus.TestBad1.X"`, testservice.BadName, path), `{"P":1}`)
	}
	cases := []struct {
		path godbus.ObjectPath
		want []string
	}{
		{testservice.HangPath, []string{"dbus: objects[0]: introspect org.opdbus.TestBad1 /org/opdbus/TestBad1/hang: Introspect: no reply", "(the service did not answer within 2s)"}},
		{testservice.MalformedPath, []string{"objects[0]: introspect org.opdbus.TestBad1 /org/opdbus/TestBad1/malformed: invalid introspection XML"}},
		{testservice.DeniedPath, []string{"objects[0]: introspect org.opdbus.TestBad1 /org/opdbus/TestBad1/denied", "[org.freedesktop.DBus.Error.AccessDenied]", "run as root"}},
	}
	if !testing.Short() {
		cases = append(cases, struct {
			path godbus.ObjectPath
			want []string
		}{testservice.HugePath, []string{"introspection XML is", "more than the 4 MiB limit"}})
	}
	for _, c := range cases {
		// Reading 100 MB takes a few seconds (more under -race): give the
		// huge object time to arrive, so the size limit is what fails.
		p.timeout = 2 * time.Second
		if c.path == testservice.HugePath {
			p.timeout = 60 * time.Second
		}
		start := time.Now()
		_, err := r.plan(r.doc(bad(c.path)))
		wantErr(t, err, c.want...)
		if d := time.Since(start); d > p.timeout+5*time.Second {
			t.Errorf("%s: took %v", c.path, d)
		}
	}
	// The good service on the same bus still works meanwhile.
	if pl := r.mustPlan(r.doc(obj(settings, `{"Limit":10}`))); len(pl.Ops) != 0 {
		t.Errorf("plan: %v", opIDs(pl))
	}
}

// wire encodes a variant in a D-Bus message and decodes it again.
func wire(v godbus.Variant) (godbus.Variant, error) {
	msg := &godbus.Message{Type: godbus.TypeSignal, Headers: map[godbus.HeaderField]godbus.Variant{
		godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath("/x")),
		godbus.FieldInterface: godbus.MakeVariant("x.y"),
		godbus.FieldMember:    godbus.MakeVariant("Z"),
		godbus.FieldSignature: godbus.MakeVariant(godbus.SignatureOf(v)),
	}, Body: []any{v}}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		return godbus.Variant{}, err
	}
	back, err := godbus.DecodeMessage(&buf)
	if err != nil {
		return godbus.Variant{}, err
	}
	return back.Body[0].(godbus.Variant), nil
}
