package networkmanager

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

func ptr[T any](v T) *T { return &v }

func mustState(t testing.TB, js string) *State {
	t.Helper()
	var s State
	dec := json.NewDecoder(strings.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("decode %s: %v", js, err)
	}
	return &s
}

func TestValidateBadInput(t *testing.T) {
	for _, tc := range []struct{ doc, path, msg string }{
		{`{"connections":{"a":{"ipv4":{"addresses":["10.0.0.300/24"]}}}}`, `connections["a"].ipv4.addresses[0]`, "CIDR"},
		{`{"connections":{"a":{"ipv4":{"addresses":["10.0.0.1"]}}}}`, `connections["a"].ipv4.addresses[0]`, "CIDR"},
		{`{"connections":{"a":{"ipv4":{"addresses":["fd00::1/64"]}}}}`, `connections["a"].ipv4.addresses[0]`, "not an IPv4"},
		{`{"connections":{"a":{"ipv6":{"addresses":["10.0.0.1/8"]}}}}`, `connections["a"].ipv6.addresses[0]`, "not an IPv6"},
		{`{"connections":{"a":{"interface_name":"abcdefghijklmnop"}}}`, `connections["a"].interface_name`, "at most 15"},
		{`{"connections":{"a":{"interface_name":"a/b"}}}`, `connections["a"].interface_name`, "'/'"},
		{`{"connections":{"a":{"interface_name":"br9","controller":"br9","port_type":"bridge"}}}`, `connections["a"].controller`, "port of itself"},
		{`{"connections":{"a":{"ipv4":{"method":"dhcp"}}}}`, `connections["a"].ipv4.method`, "unknown method"},
		{`{"connections":{"a":{"ipv6":{"method":"static"}}}}`, `connections["a"].ipv6.method`, "unknown method"},
		{`{"connections":{"a":{"type":"bridge","mtu":0}}}`, `connections["a"].mtu`, "out of range"},
		{`{"connections":{"a":{"type":"bridge","mtu":100000}}}`, `connections["a"].mtu`, "out of range"},
		{`{"connections":{"a":{"type":"wireguard","mtu":1400}}}`, `connections["a"].mtu`, "no 802-3-ethernet"},
		{`{"connections":{"a":{"type":"bridgee"}}}`, `connections["a"].type`, "unknown connection type"},
		{`{"connections":{"a":{"state":"gone"}}}`, `connections["a"].state`, "present"},
		{`{"connections":{"a":{"uuid":"nope"}}}`, `connections["a"].uuid`, "not a UUID"},
		{`{"connections":{"a":{"controller":"","port_type":"bridge"}}}`, `connections["a"].port_type`, "without a controller"},
		{`{"connections":{"a":{"controller":"br0","port_type":"hub"}}}`, `connections["a"].port_type`, "unknown port type"},
		{`{"connections":{"a":{"controller":"br0","port_type":"bridge","ipv4":{"method":"auto"}}}}`, `connections["a"]`, "no IP configuration"},
		{`{"connections":{"a":{"ipv4":{"method":"manual","addresses":[]}}}}`, `connections["a"].ipv4.addresses`, "at least one"},
		{`{"connections":{"a":{"ipv4":{"method":"disabled","addresses":["10.0.0.1/8"]}}}}`, `connections["a"].ipv4.addresses`, "not allowed"},
		{`{"connections":{"a":{"ipv4":{"gateway":"fd00::1"}}}}`, `connections["a"].ipv4.gateway`, "not an IPv4"},
		{`{"connections":{"a":{"ipv4":{"dns":["1.1.1"]}}}}`, `connections["a"].ipv4.dns[0]`, "not an IPv4"},
		{`{"connections":{"a":{"type":"ethernet","bridge":{"stp":true}}}}`, `connections["a"].bridge`, "bridge settings"},
		{`{"connections":{"a":{"type":"veth","interface_name":"v0","veth":{"peer":"v0"}}}}`, `connections["a"].veth.peer`, "own peer"},
		{`{"connections":{
			"p1":{"interface_name":"eth1","controller":"br0","port_type":"bridge","active":true},
			"p2":{"interface_name":"eth1","controller":"br1","port_type":"bridge","active":true}}}`, `connections["p2"].active`, "one controller"},
		{`{"connections":{" ":{}}}`, `connections[" "]`, "empty connection id"},
	} {
		ps := validate(mustState(t, tc.doc))
		found := false
		for _, p := range ps {
			if p.Path == tc.path && strings.Contains(p.Msg, tc.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want problem at %s containing %q, got %v", tc.doc, tc.path, tc.msg, ps)
		}
	}
	good := mustState(t, `{"connections":{
		"br9":{"type":"bridge","interface_name":"br9","active":true,"mtu":9000,"bridge":{"stp":false},
			"ipv4":{"method":"manual","addresses":["10.99.0.1/24"],"gateway":"10.99.0.254","dns":["10.99.0.53"]},
			"ipv6":{"method":"manual","addresses":["fd00::1/64"],"dns":["fd00::53"]}},
		"port":{"type":"ethernet","interface_name":"eth1","controller":"br9","port_type":"bridge"},
		"old":{"state":"absent"}}}`)
	if ps := validate(good); len(ps) != 0 {
		t.Errorf("valid document rejected: %v", ps)
	}
}

// current is a host with an active bridge br9 and an inactive profile.
func current() *State {
	return &State{Connections: map[string]*Connection{
		"br9": {State: statePresent, UUID: "11111111-1111-4111-8111-111111111111", Type: "bridge", InterfaceName: ptr("br9"),
			Autoconnect: ptr(true), Active: ptr(true), ActiveState: "activated", Controller: ptr(""), PortType: ptr(""),
			Bridge: &Bridge{STP: ptr(false)},
			IPv4:   &IP{Method: "manual", Addresses: []string{"10.99.0.1/24"}, Gateway: ptr(""), DNS: []string{}},
			IPv6:   &IP{Method: "disabled", Addresses: []string{}, Gateway: ptr(""), DNS: []string{}}},
		"idle": {State: statePresent, UUID: "22222222-2222-4222-8222-222222222222", Type: "ethernet", InterfaceName: ptr("eth1"),
			Autoconnect: ptr(false), Active: ptr(false), Controller: ptr(""), PortType: ptr(""),
			IPv4: &IP{Method: "auto", Addresses: []string{}, Gateway: ptr(""), DNS: []string{}}},
	}}
}

func planData(t *testing.T, cur, des *State) (string, []step, []string) {
	t.Helper()
	ops, err := plan(cur, des)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) == 0 {
		return "", nil, nil
	}
	if len(ops) != 1 || ops[0].ID != TransactionID || !ops[0].Reversible {
		t.Fatalf("ops = %+v", ops)
	}
	var d opData
	if err := json.Unmarshal(ops[0].Data, &d); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, c := range ops[0].Changes {
		paths = append(paths, c.Path)
	}
	return ops[0].Description, d.Steps, paths
}

func TestPlan(t *testing.T) {
	// The query of a host plans nothing against itself.
	if desc, _, _ := planData(t, current(), current()); desc != "" {
		t.Fatalf("self plan: %s", desc)
	}
	// The same addresses written differently plan nothing.
	if desc, _, _ := planData(t, current(), mustState(t, `{"connections":{"br9":{"type":"bridge","ipv4":{"addresses":["10.99.0.1/24"]},"controller":"","active":true}}}`)); desc != "" {
		t.Fatalf("no-op plan: %s", desc)
	}
	desc, st, paths := planData(t, current(), mustState(t, `{"connections":{
		"br9":{"ipv4":{"addresses":["10.99.1.1/24"],"dns":["10.0.0.53"]}},
		"idle":{"active":true},
		"new":{"type":"bridge","interface_name":"br7","active":true,"ipv4":{"method":"manual","addresses":["10.7.0.1/24"]}},
		"gone":{"state":"absent"},
		"port":{"type":"ethernet","interface_name":"eth2","controller":"br7","port_type":"bridge"}}}`))
	for _, w := range []string{"update br9 (ipv4.addresses, ipv4.dns), reactivate br9", "activate idle", "create new and activate it", "create port"} {
		if !strings.Contains(desc, w) {
			t.Errorf("description %q lacks %q", desc, w)
		}
	}
	if strings.Contains(desc, "gone") {
		t.Errorf("absent profile that does not exist planned: %s", desc)
	}
	for _, w := range []string{`connections["br9"].ipv4.addresses`, `connections["new"].state`, `connections["new"].ipv4.addresses`, `connections["idle"].active`} {
		if !slices.Contains(paths, w) {
			t.Errorf("changes lack %s: %v", w, paths)
		}
	}
	byKey := map[string]step{}
	for _, s := range st {
		byKey[s.Key] = s
	}
	if s := byKey["new"]; s.Action != actAdd || s.UUID != plannedUUID("new") || !s.Activate || !validUUID(s.UUID) {
		t.Errorf("new step %+v", s)
	}
	if s := byKey["port"]; !s.Port || s.Activate {
		t.Errorf("port step %+v", s)
	}
	if s := byKey["br9"]; s.Action != actUpdate || !s.Activate || s.UUID != current().Connections["br9"].UUID {
		t.Errorf("br9 step %+v", s)
	}
	// Deleting: by id, only that profile.
	desc, st, _ = planData(t, current(), mustState(t, `{"connections":{"idle":{"state":"absent"}}}`))
	if len(st) != 1 || st[0].Action != actDelete || st[0].UUID != current().Connections["idle"].UUID || desc != "in one NetworkManager checkpoint: delete idle" {
		t.Errorf("delete plan %q %+v", desc, st)
	}
	// Deactivating.
	_, st, _ = planData(t, current(), mustState(t, `{"connections":{"br9":{"active":false}}}`))
	if len(st) != 1 || !st[0].Deactivate || st[0].Activate {
		t.Errorf("deactivate plan %+v", st)
	}
	// Controller by UUID equals controller by name.
	cur := current()
	cur.Connections["p"] = &Connection{UUID: "33333333-3333-4333-8333-333333333333", Type: "ethernet", Controller: ptr("br9"), PortType: ptr("bridge")}
	if desc, _, _ := planData(t, cur, mustState(t, `{"connections":{"p":{"controller":"11111111-1111-4111-8111-111111111111"}}}`)); desc != "" {
		t.Errorf("controller by UUID planned %s", desc)
	}
}

func TestPlanErrors(t *testing.T) {
	cur := current()
	if _, err := plan(cur, mustState(t, `{"connections":{"x":{"interface_name":"x0"}}}`)); err == nil || !strings.Contains(err.Error(), `connections["x"].type`) {
		t.Errorf("create without type: %v", err)
	}
	if _, err := plan(cur, mustState(t, `{"connections":{"br9":{"type":"ethernet"}}}`)); err == nil || !strings.Contains(err.Error(), "cannot change a profile's type") {
		t.Errorf("type change: %v", err)
	}
	cur.Connections["22222222-2222-4222-8222-22222222222a"] = &Connection{ID: "br9", UUID: "22222222-2222-4222-8222-22222222222a", Type: "bridge"}
	if _, err := plan(cur, mustState(t, `{"connections":{"br9":{"autoconnect":false}}}`)); err == nil || !strings.Contains(err.Error(), "add \"uuid\"") {
		t.Errorf("ambiguous id: %v", err)
	}
	// With uuid it is not ambiguous.
	if _, err := plan(cur, mustState(t, `{"connections":{"br9":{"uuid":"11111111-1111-4111-8111-111111111111","autoconnect":false}}}`)); err != nil {
		t.Errorf("by uuid: %v", err)
	}
}

// Rollback (Subset of the pre-apply state) deletes what the transaction
// created, restores what it changed, and names nothing else.
func TestSubsetUndoesTransaction(t *testing.T) {
	pre := current()
	ops, err := plan(pre, mustState(t, `{"connections":{
		"br9":{"ipv4":{"addresses":["10.99.1.1/24"]}},
		"new":{"type":"bridge","interface_name":"br7"},
		"idle":{"state":"absent"}}}`))
	if err != nil || len(ops) != 1 {
		t.Fatal(err, ops)
	}
	sub := subset(pre, []string{ops[0].Item})
	if len(sub.Connections) != 3 {
		t.Fatalf("subset = %+v", sub.Connections)
	}
	newUUID := plannedUUID("new")
	if c := sub.Connections[newUUID]; c == nil || c.State != stateAbsent || c.UUID != newUUID {
		t.Errorf("created profile not absent in subset: %+v", c)
	}
	if c := sub.Connections["idle"]; c == nil || c.State != statePresent || c.Type != "ethernet" || *c.InterfaceName != "eth1" {
		t.Errorf("deleted profile not restored: %+v", c)
	}
	// After the transaction: br9 changed, new exists, idle deleted.
	post := current()
	post.Connections["br9"].IPv4.Addresses = []string{"10.99.1.1/24"}
	delete(post.Connections, "idle")
	post.Connections["new"] = &Connection{UUID: newUUID, Type: "bridge", InterfaceName: ptr("br7"), Active: ptr(false)}
	post.Connections["other"] = &Connection{UUID: "44444444-4444-4444-8444-444444444444", Type: "bridge"}
	desc, st, _ := planData(t, post, sub)
	byKey := map[string]step{}
	for _, s := range st {
		byKey[s.UUID] = s
	}
	if s := byKey[newUUID]; s.Action != actDelete {
		t.Errorf("rollback does not delete the created profile: %s %+v", desc, st)
	}
	if s := byKey[pre.Connections["idle"].UUID]; s.Action != actAdd {
		t.Errorf("rollback does not re-create the deleted profile: %s", desc)
	}
	if s := byKey[pre.Connections["br9"].UUID]; s.Action != actUpdate || s.Conn.IPv4.Addresses[0] != "10.99.0.1/24" {
		t.Errorf("rollback does not restore br9: %s", desc)
	}
	if _, ok := byKey["44444444-4444-4444-8444-444444444444"]; ok || len(st) != 3 {
		t.Errorf("rollback touches more than the transaction: %s", desc)
	}
	// After rollback the subset plans nothing.
	if desc, _, _ := planData(t, pre, sub); desc != "" {
		t.Errorf("subset against pre plans %s", desc)
	}
}

func TestSettingsRoundTrip(t *testing.T) {
	d := mustState(t, `{"connections":{"br9":{"type":"bridge","interface_name":"br9","autoconnect":false,"mtu":9000,
		"bridge":{"stp":false},
		"ipv4":{"method":"manual","addresses":["10.99.0.1/24","10.99.1.1/16"],"gateway":"10.99.0.254","dns":["10.99.0.53","1.2.3.4"]},
		"ipv6":{"method":"manual","addresses":["fd00::1/64"],"gateway":"fd00::fe","dns":["fd00::53"]}}}}`).Connections["br9"]
	s := newSettings("br9", plannedUUID("br9"), d)
	if got := s["ipv4"]["dns"].Signature().String(); got != "au" {
		t.Errorf("ipv4.dns signature %s", got)
	}
	if got := s["ipv6"]["dns"].Signature().String(); got != "aay" {
		t.Errorf("ipv6.dns signature %s", got)
	}
	c := fromSettings(s)
	if c.ID != "br9" || c.UUID != plannedUUID("br9") || c.Type != "bridge" {
		t.Errorf("fromSettings: %+v", c)
	}
	c.ID, c.UUID, c.State = "", "", ""
	got, _ := json.Marshal(c)
	d.State = ""
	d.Controller, d.PortType = ptr(""), ptr("")
	want, _ := json.Marshal(d)
	if string(got) != string(want) {
		t.Errorf("round trip:\n got %s\nwant %s", got, want)
	}
	// Defaults NetworkManager leaves out of GetSettings.
	c = fromSettings(Settings{"connection": {"id": dbus.MakeVariant("x"), "uuid": dbus.MakeVariant("u"), "type": dbus.MakeVariant("bridge")}})
	if !*c.Autoconnect || !*c.Bridge.STP || c.MTU != nil || c.IPv4 != nil {
		t.Errorf("defaults: %+v", c)
	}
	// Legacy struct-typed keys are dropped; other structs are refused.
	legacy := Settings{"ipv6": {"addresses": dbus.MakeVariant([]struct {
		A []byte
		P uint32
		G []byte
	}{}), "method": dbus.MakeVariant("auto")}}
	out, err := sendable(legacy)
	if err != nil || len(out["ipv6"]) != 1 {
		t.Errorf("sendable legacy: %v %v", out, err)
	}
	if _, err := sendable(Settings{"x": {"y": dbus.MakeVariant(struct{ A uint32 }{1})}}); err == nil {
		t.Error("sendable accepted a struct value")
	}
}

func TestPlannedUUIDStable(t *testing.T) {
	a, b := plannedUUID("br9"), plannedUUID("br9")
	if a != b || !validUUID(a) || a == plannedUUID("br8") || a[14] != '5' {
		t.Errorf("plannedUUID: %s %s", a, b)
	}
}

func TestConnectionsFromSettingsDuplicateIDs(t *testing.T) {
	mk := func(id, uuid string) Settings {
		return Settings{"connection": {"id": dbus.MakeVariant(id), "uuid": dbus.MakeVariant(uuid), "type": dbus.MakeVariant("802-3-ethernet")}}
	}
	m := connectionsFromSettings([]Settings{mk("a", "u1"), mk("dup", "u3"), mk("dup", "u2")})
	if c := m["a"]; c == nil || c.ID != "" || c.Type != "ethernet" {
		t.Errorf("unique: %+v", m["a"])
	}
	if m["u2"] == nil || m["u2"].ID != "dup" || m["u3"] == nil || m["dup"] != nil {
		t.Errorf("duplicates: %+v", m)
	}
}
