package dbus

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

func decode(t *testing.T, p *Plugin, doc string) (*State, error) {
	t.Helper()
	d, err := state.Decode([]byte(doc), state.FormatAuto, state.Types{"dbus": p.NewState},
		func(_ string, st any) state.Problems { return p.Validate(st) })
	if err != nil {
		return nil, err
	}
	return d.Plugins["dbus"].(*State), nil
}

func TestValidateThroughDecoder(t *testing.T) {
	p := New("")
	obj := func(fields string) string {
		return `{"version":1,"plugins":{"dbus":{"objects":[` + fields + `]}}}`
	}
	good := `{"service":"org.opdbus.Test1","path":"/org/opdbus/Test1/settings","interface":"org.opdbus.Test1.Settings","properties":{"Verbose":true}}`
	cases := []struct{ doc, want string }{
		{obj(`{"service":"org.opdbus.Test 1","path":"/a","interface":"a.b","properties":{}}`), `plugins.dbus.objects[0].service: invalid: "org.opdbus.Test 1": bus name has character ' '`},
		{obj(`{"service":":1.5","path":"/a","interface":"a.b","properties":{}}`), `plugins.dbus.objects[0].service: invalid: ":1.5": unique connection names`},
		{obj(`{"service":"a.b","path":"a","interface":"a.b","properties":{}}`), `plugins.dbus.objects[0].path: invalid: "a": object path must start with '/'`},
		{obj(`{"service":"a.b","path":"/a/","interface":"a.b","properties":{}}`), `plugins.dbus.objects[0].path: invalid: "/a/": object path must not end with '/'`},
		{obj(`{"service":"a.b","path":"/a","interface":"a-b.c","properties":{}}`), `plugins.dbus.objects[0].interface: invalid: "a-b.c": interface name has character '-'`},
		{obj(`{"service":"a.b","path":"/a","properties":{}}`), `plugins.dbus.objects[0].interface: missing`},
		{obj(`{"bus":"sytem","service":"a.b","path":"/a","interface":"a.b","properties":{}}`), `plugins.dbus.objects[0].bus: bus "sytem": expected system, session or a D-Bus address`},
		{obj(`{"service":"a.b","path":"/a","interface":"a.b","properties":{"Set NTP":true}}`), `plugins.dbus.objects[0].properties["Set NTP"]: invalid property name: member name has character ' '`},
		{obj(`{"service":"a.b","path":"/a","interface":"a.b","properties":{"NTP":null}}`), `plugins.dbus.objects[0].properties.NTP: null is not a D-Bus value`},
		{obj(`{"service":"a.b","path":"/a","interface":"a.b","properties":{"NTP":true},"method":"PowerOff"}`), `plugins.dbus.objects[0].method: unknown field`},
		{obj(good + `,` + strings.Replace(good, "true", "false", 1)), `plugins.dbus.objects[1].properties.Verbose: already declared at objects[0].properties.Verbose`},
		{obj(`{"service":"a.b","path":"/a","interface":"a.b","properties":{"P":1}},{"service":"a.b","path":"/a","interface":"a.b","bus":"system","properties":{"P":2}}`), `objects[1].properties.P: already declared at objects[0].properties.P`},
	}
	for _, c := range cases {
		_, err := decode(t, p, c.doc)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s", c.doc, err, c.want)
		}
	}
	// The same property on another bus or interface is not a duplicate.
	if _, err := decode(t, p, obj(good+`,`+strings.Replace(good, `"service"`, `"bus":"session","service"`, 1))); err != nil {
		t.Errorf("other bus: %v", err)
	}
	st, err := decode(t, p, "version: 1\nplugins:\n  dbus:\n    objects:\n      - service: org.opdbus.Test1\n        path: /org/opdbus/Test1/settings\n        interface: org.opdbus.Test1.Settings\n        properties: {Limit: 18446744073709551615, Verbose: true}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(st.Objects[0].Properties["Limit"]); got != "18446744073709551615" {
		t.Errorf("YAML number not kept exactly: %s", got)
	}
}

// current builds a state as QueryFor would return it for the settings
// object with the given property values.
func current(t *testing.T, props string) *State {
	t.Helper()
	in, err := parseIntrospection([]byte(settingsXML))
	if err != nil {
		t.Fatal(err)
	}
	o := Object{Service: "org.opdbus.Test1", Path: "/org/opdbus/Test1/settings", Interface: "org.opdbus.Test1.Settings"}
	if err := json.Unmarshal([]byte(props), &o.Properties); err != nil {
		t.Fatal(err)
	}
	return &State{Objects: []Object{o}, intro: map[objKey]*introspection{keyOf(o): in}}
}

func desired(t *testing.T, p *Plugin, props string) *State {
	t.Helper()
	st, err := decode(t, p, `{"version":1,"plugins":{"dbus":{"objects":[{"service":"org.opdbus.Test1","path":"/org/opdbus/Test1/settings","interface":"org.opdbus.Test1.Settings","properties":`+props+`}]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func withModeMapping(t *testing.T) *Plugin {
	t.Helper()
	dir := t.TempDir()
	writeMapping(t, dir, "test1.yaml", goodMapping)
	p := New(dir)
	if p.mapErr != nil {
		t.Fatal(p.mapErr)
	}
	return p
}

func TestPlan(t *testing.T) {
	p := withModeMapping(t)
	cur := current(t, `{"Mode":"normal","Verbose":false,"Limit":10,"Count":3}`)

	ops, err := p.Plan(cur, desired(t, p, `{"Verbose":true,"Limit":20.0,"Mode":"eco"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 3 {
		t.Fatalf("ops: %+v", ops)
	}
	// Sorted by property name, chained per service.
	wantIDs := []string{
		"dbus/set/objects/org.opdbus.Test1/org/opdbus/Test1/settings/org.opdbus.Test1.Settings.Limit",
		"dbus/set/objects/org.opdbus.Test1/org/opdbus/Test1/settings/org.opdbus.Test1.Settings.Mode",
		"dbus/set/objects/org.opdbus.Test1/org/opdbus/Test1/settings/org.opdbus.Test1.Settings.Verbose",
	}
	for i, op := range ops {
		if op.ID != wantIDs[i] || op.Item != strings.TrimPrefix(wantIDs[i], "dbus/set/") || !op.Reversible {
			t.Errorf("op %d: %+v", i, op)
		}
		if i > 0 && !reflect.DeepEqual(op.DependsOn, []string{wantIDs[i-1]}) {
			t.Errorf("op %d depends on %v", i, op.DependsOn)
		}
	}
	var d opData
	_ = json.Unmarshal(ops[0].Data, &d)
	if d.Method != methodSet || d.Signature != "u" || string(d.Value) != "20" {
		t.Errorf("Limit op data: %+v", d)
	}
	_ = json.Unmarshal(ops[1].Data, &d)
	if d.Method != "SetMode" || string(d.Value) != `"eco"` {
		t.Errorf("Mode op data: %+v", d)
	}
	if c := ops[1].Changes[0]; c.Path != "objects[0].properties.Mode" || c.Current != "normal" || c.Desired != "eco" {
		t.Errorf("Mode change: %+v", c)
	}
	if !strings.Contains(ops[1].Description, `set org.opdbus.Test1.Settings.Mode of org.opdbus.Test1 /org/opdbus/Test1/settings to "eco" (SetMode)`) {
		t.Errorf("description: %s", ops[1].Description)
	}
	if !strings.Contains(ops[0].Description, "(Properties.Set)") {
		t.Errorf("description: %s", ops[0].Description)
	}

	// In sync: no ops, also with numbers written differently.
	if ops, err := p.Plan(cur, desired(t, p, `{"Verbose":false,"Limit":1e1,"Mode":"normal"}`)); err != nil || len(ops) != 0 {
		t.Errorf("in sync: %v %+v", err, ops)
	}
	// A read-only property may be declared when mapped even if in sync,
	// but never without a mapping: the plan fails on any host.
	_, err = p.Plan(cur, desired(t, p, `{"Count":3}`))
	if err == nil || !strings.Contains(err.Error(), "objects[0].properties.Count: property Count of org.opdbus.Test1 is read-only and no mapping sets it") {
		t.Errorf("read-only: %v", err)
	}
	// Without the user mapping, Mode is read-only too.
	if _, err := New("").Plan(cur, desired(t, p, `{"Mode":"eco"}`)); err == nil || !strings.Contains(err.Error(), "Mode of org.opdbus.Test1 is read-only and no mapping sets it") {
		t.Errorf("no mapping: %v", err)
	}

	for _, c := range []struct{ props, want string }{
		{`{"Limit":"20"}`, `objects[0].properties.Limit: expected signature u (uint32), got the string "20"`},
		{`{"Limit":-1}`, `objects[0].properties.Limit: expected signature u (uint32), got -1, out of range 0..4294967295`},
		{`{"Limit":4294967296}`, `out of range 0..4294967295`},
		{`{"Limit":2.5}`, `objects[0].properties.Limit: expected signature u (uint32), got the fraction 2.5`},
		{`{"Verbose":"true"}`, `objects[0].properties.Verbose: expected signature b (boolean), got the string "true"`},
		{`{"Mode":["eco"]}`, `objects[0].properties.Mode: expected signature s (string), got a list of 1`},
		{`{"Nope":1}`, `objects[0].properties.Nope: interface org.opdbus.Test1.Settings of org.opdbus.Test1 /org/opdbus/Test1/settings has no property Nope (its properties: Count, Limit, Mode, Verbose)`},
	} {
		ops, err := p.Plan(cur, desired(t, p, c.props))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v %+v\nwant %s", c.props, err, ops, c.want)
		}
	}
	// Every problem is reported, on one line.
	_, err = p.Plan(cur, desired(t, p, `{"Limit":"x","Verbose":1}`))
	if err == nil || !strings.Contains(err.Error(), "properties.Limit") || !strings.Contains(err.Error(), "properties.Verbose") || strings.Contains(err.Error(), "\n") {
		t.Errorf("two problems: %v", err)
	}

	// Unknown interface, and an object that was never read.
	des := desired(t, p, `{"Verbose":true}`)
	des.Objects[0].Interface = "org.opdbus.Test1.Nope"
	if _, err := p.Plan(cur, des); err == nil || !strings.Contains(err.Error(), "objects[0].interface: org.opdbus.Test1 /org/opdbus/Test1/settings has no interface org.opdbus.Test1.Nope (its interfaces: org.opdbus.Test1.Other, org.opdbus.Test1.Settings)") {
		t.Errorf("interface: %v", err)
	}
	if _, err := p.Plan(&State{}, desired(t, p, `{"Verbose":true}`)); err == nil || !strings.Contains(err.Error(), "was not read from the bus") {
		t.Errorf("unread: %v", err)
	}
}

// A mapping for one interface is not used for another interface of the
// same service, even when that interface has a method of the same name.
func TestPlanMappingScopedToInterface(t *testing.T) {
	p := withModeMapping(t)
	in, _ := parseIntrospection([]byte(strings.Replace(settingsXML, `<interface name="org.opdbus.Test1.Other">`, `<interface name="org.opdbus.Test1.Other"><property name="Mode" type="s" access="read"/>`, 1)))
	o := Object{Service: "org.opdbus.Test1", Path: "/org/opdbus/Test1/settings", Interface: "org.opdbus.Test1.Other", Properties: map[string]json.RawMessage{"Mode": json.RawMessage(`"normal"`)}}
	cur := &State{Objects: []Object{o}, intro: map[objKey]*introspection{keyOf(o): in}}
	des := &State{Objects: []Object{{Service: o.Service, Path: o.Path, Interface: o.Interface, Properties: map[string]json.RawMessage{"Mode": json.RawMessage(`"eco"`)}}}}
	if _, err := p.Plan(cur, des); err == nil || !strings.Contains(err.Error(), "read-only and no mapping sets it") {
		t.Errorf("mapping used for another interface: %v", err)
	}
	// Nor for another service that has the same interface.
	o.Interface = "org.opdbus.Test1.Settings"
	o.Service = "org.opdbus.Impostor"
	cur = &State{Objects: []Object{o}, intro: map[objKey]*introspection{keyOf(o): in}}
	des.Objects[0].Service, des.Objects[0].Interface = o.Service, o.Interface
	if _, err := p.Plan(cur, des); err == nil || !strings.Contains(err.Error(), "read-only and no mapping sets it") {
		t.Errorf("mapping used for another service: %v", err)
	}
}

func TestSubsetAndQuery(t *testing.T) {
	p := New("")
	st := current(t, `{"Mode":"normal","Verbose":false,"Limit":10}`)
	item := Item(st.Objects[0], "Limit")
	got := p.Subset(st, []string{item, "objects/other"}).(*State)
	if len(got.Objects) != 1 || len(got.Objects[0].Properties) != 1 || string(got.Objects[0].Properties["Limit"]) != "10" {
		t.Errorf("subset: %+v", got)
	}
	if got := p.Subset(st, nil).(*State); got.Objects == nil || len(got.Objects) != 0 {
		t.Errorf("empty subset: %+v", got)
	}
	o := st.Objects[0]
	o.Bus = "session"
	if it := Item(o, "Limit"); !strings.HasSuffix(it, ".Limit@session") {
		t.Errorf("item on the session bus: %s", it)
	}
	q, err := p.Query(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(q); string(b) != `{"objects":[]}` {
		t.Errorf("query: %s", b)
	}
	q, err = p.QueryFor(t.Context(), &State{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(q); string(b) != `{"objects":[]}` {
		t.Errorf("query for nothing: %s", b)
	}
}

// Apply refuses op data that names anything the plan would not have chosen.
func TestApplyRefusesForgedOps(t *testing.T) {
	p := New("")
	for _, c := range []struct{ data, want string }{
		{`{"service":"org.x.Y","path":"/","interface":"a.b","property":"P","signature":"s","value":"1","method":"PowerOff","extra":1}`, "bad op data"},
		{`{"service":"org x","path":"/","interface":"a.b","property":"P","signature":"s","value":"1","method":"Set"}`, "bad op data"},
		{`{"service":"org.x.Y","path":"/","interface":"a.b","property":"a.b.C","signature":"s","value":"1","method":"Set"}`, "bad op data: property"},
	} {
		err := p.Apply(t.Context(), plugin.Op{Data: json.RawMessage(c.data)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.data, err)
		}
	}
}
