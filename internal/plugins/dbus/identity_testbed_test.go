package dbus

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// End-to-end against the Identity bed: real hostnamed and timedated on a
// private system bus, busctl as the oracle.

const (
	hostname1 = `"service":"org.freedesktop.hostname1","path":"/org/freedesktop/hostname1","interface":"org.freedesktop.hostname1"`
	timedate1 = `"service":"org.freedesktop.timedate1","path":"/org/freedesktop/timedate1","interface":"org.freedesktop.timedate1"`
)

func obj(fields, props string) string { return "{" + fields + `,"properties":` + props + "}" }

func identity(t *testing.T) *testbed.Identity {
	t.Helper()
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	return b
}

func busProp(t *testing.T, b *testbed.Identity, svc, prop string) string {
	t.Helper()
	path := "/org/freedesktop/" + strings.TrimPrefix(svc, "org.freedesktop.")
	out, err := b.Busctl(context.Background(), "get-property", svc, path, svc, prop)
	if err != nil {
		t.Fatalf("busctl get-property %s %s: %v", svc, prop, err)
	}
	return strings.TrimSpace(out)
}

func TestTestbedHostnameViaMapping(t *testing.T) {
	b := identity(t)
	r := newRig(t, New(""))
	doc := r.doc(obj(hostname1, `{"Location":"rack 7","PrettyHostname":"op-dbus test host"}`))

	pl := r.mustPlan(doc)
	if len(pl.Ops) != 2 {
		t.Fatalf("ops: %v", opIDs(pl))
	}
	for _, op := range pl.Ops {
		if !strings.Contains(op.Description, "(SetLocation)") && !strings.Contains(op.Description, "(SetPrettyHostname)") {
			t.Errorf("op not through the mapped setter: %s", op.Description)
		}
	}
	r.apply(doc)
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "rack 7"` {
		t.Errorf("Location: %s", got)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "PrettyHostname"); got != `s "op-dbus test host"` {
		t.Errorf("PrettyHostname: %s", got)
	}
	if pl := r.mustPlan(doc); len(pl.Ops) != 0 {
		t.Errorf("re-plan: %v", opIDs(pl))
	}
	// The query re-applies with zero ops.
	q := r.query(doc)
	if !strings.Contains(q, `"Location":"rack 7"`) {
		t.Errorf("query: %s", q)
	}
	if pl := r.mustPlan(r.requery(q)); len(pl.Ops) != 0 {
		t.Errorf("query re-applied: %v", opIDs(pl))
	}

	// Out-of-band change: the plan is exactly the op that restores it.
	if out, err := b.Busctl(context.Background(), "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "moved", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	pl = r.mustPlan(doc)
	if len(pl.Ops) != 1 || pl.Ops[0].Item != "objects/org.freedesktop.hostname1/org/freedesktop/hostname1/org.freedesktop.hostname1.Location" {
		t.Fatalf("drift plan: %v", opIDs(pl))
	}
	if c := pl.Ops[0].Changes[0]; c.Path != "objects[0].properties.Location" || c.Current != "moved" || c.Desired != "rack 7" {
		t.Errorf("drift change: %+v", c)
	}
	r.apply(doc)
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "rack 7"` {
		t.Errorf("Location after restore: %s", got)
	}
}

func TestTestbedTimezoneViaMapping(t *testing.T) {
	b := identity(t)
	r := newRig(t, New(""))
	zone := "Europe/Berlin"
	if strings.Contains(busProp(t, b, "org.freedesktop.timedate1", "Timezone"), zone) {
		zone = "Asia/Tokyo"
	}
	doc := r.doc(obj(timedate1, fmt.Sprintf(`{"Timezone":%q}`, zone)))
	r.apply(doc)
	if got := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); got != fmt.Sprintf("s %q", zone) {
		t.Errorf("Timezone: %s", got)
	}
	if out, err := b.Exec(context.Background(), "readlink", "/etc/localtime"); err != nil || !strings.HasSuffix(strings.TrimSpace(out), zone) {
		t.Errorf("/etc/localtime in the bed: %q %v", out, err)
	}
	if pl := r.mustPlan(doc); len(pl.Ops) != 0 {
		t.Errorf("re-plan: %v", opIDs(pl))
	}
}

// Wrong types and read-only properties without a mapping fail at plan
// time, naming the path; nothing is called.
func TestTestbedPlanErrorsChangeNothing(t *testing.T) {
	b := identity(t)
	r := newRig(t, New(""))
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	cases := []struct {
		doc  []string
		want []string
	}{
		{[]string{obj(hostname1, `{"Location":5,"PrettyHostname":"x"}`)},
			[]string{"dbus: plan: objects[0].properties.Location: expected signature s (string), got the number 5"}},
		{[]string{obj(hostname1, `{"Location":"x"}`), obj(timedate1, `{"NTP":"yes"}`)},
			[]string{`objects[1].properties.NTP: expected signature b (boolean), got the string "yes"`}},
		{[]string{obj(hostname1, `{"Location":"x","KernelName":"Plan9"}`)},
			[]string{"objects[0].properties.KernelName: property KernelName of org.freedesktop.hostname1 is read-only and no mapping sets it"}},
		{[]string{obj(timedate1, `{"CanNTP":true}`)},
			[]string{"objects[0].properties.CanNTP: property CanNTP of org.freedesktop.timedate1 is read-only and no mapping sets it", MappingsEnv}},
		{[]string{obj(hostname1, `{"Locatoin":"x"}`)},
			[]string{"objects[0].properties.Locatoin: interface org.freedesktop.hostname1 of org.freedesktop.hostname1 /org/freedesktop/hostname1 has no property Locatoin"}},
		{[]string{obj(strings.Replace(hostname1, `"interface":"org.freedesktop.hostname1"`, `"interface":"org.freedesktop.timedate1"`, 1), `{"NTP":true}`)},
			[]string{"objects[0].interface: org.freedesktop.hostname1 /org/freedesktop/hostname1 has no interface org.freedesktop.timedate1"}},
	}
	for _, c := range cases {
		_, err := r.plan(r.doc(c.doc...))
		wantErr(t, err, c.want...)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Errorf("Location changed: %s → %s", before, got)
	}
}

// In this bed timedated has no NTP service: SetNTP fails, the failure names
// the method, the mapping and timedated's error, and nothing is changed.
func TestTestbedNTPMappingFailsClearly(t *testing.T) {
	b := identity(t)
	r := newRig(t, New(""))
	doc := r.doc(obj(timedate1, `{"NTP":true}`))
	pl := r.mustPlan(doc)
	if len(pl.Ops) != 1 || !strings.Contains(pl.Ops[0].Description, "set NTP of org.freedesktop.timedate1 to true (SetNTP)") {
		t.Fatalf("plan: %+v", pl.Ops)
	}
	res := r.tryApply(doc)
	if res.Success {
		t.Fatal("SetNTP succeeded in a bed without NTP")
	}
	wantErr(t, res.Err, "SetNTP", "mapping shipped:timedate1.yaml", "NTP not supported", "[org.freedesktop.timedate1.NoNTPSupport]")
	if got := busProp(t, b, "org.freedesktop.timedate1", "NTP"); got != "b false" {
		t.Errorf("NTP: %s", got)
	}
}

// A failing op rolls back the properties the transaction set before it.
func TestTestbedRollback(t *testing.T) {
	b := identity(t)
	r := newRig(t, New(""))
	r.e.Parallel = 1
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	zone := busProp(t, b, "org.freedesktop.timedate1", "Timezone")
	doc := r.doc(obj(hostname1, `{"Location":"will be undone"}`), obj(timedate1, `{"Timezone":"Mars/Olympus_Mons"}`))
	res := r.tryApply(doc)
	if res.Success {
		t.Fatal("bad zone applied")
	}
	wantErr(t, res.Err, "set Timezone of org.freedesktop.timedate1 with SetTimezone", "Mars/Olympus_Mons")
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback: %+v", res.Rollback)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Errorf("Location not rolled back: %s, was %s", got, before)
	}
	if got := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); got != zone {
		t.Errorf("Timezone: %s, was %s", got, zone)
	}
}

// Bad buses, absent services and bad mappings: a clear error, quickly,
// nothing changed.
func TestTestbedBadInput(t *testing.T) {
	b := identity(t)
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	r := newRig(t, New(""))
	start := time.Now()
	_, err := r.plan(r.doc(obj(`"bus":"unix:path=/nonexistent/bus","service":"org.freedesktop.hostname1","path":"/org/freedesktop/hostname1","interface":"org.freedesktop.hostname1"`, `{"Location":"x"}`)))
	wantErr(t, err, "objects[0]: connect to bus unix:path=/nonexistent/bus", "nothing listens at that address")
	_, err = r.plan(r.doc(obj(`"service":"org.opdbus.Absent","path":"/","interface":"org.opdbus.Absent"`, `{"X":1}`)))
	wantErr(t, err, "objects[0]: org.opdbus.Absent is not on the system bus and cannot be activated")
	_, err = r.plan(r.doc(obj(hostname1, `{"Location":"x"}`), obj(`"bus":"session","service":"org.opdbus.Absent","path":"/","interface":"org.opdbus.Absent"`, `{"X":1}`)))
	if err == nil {
		t.Errorf("session bus object planned")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("bad input took %v", d)
	}

	// Mappings that point elsewhere are refused when loaded: the plugin is
	// unavailable and the plan fails before any call.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "evil.yaml"), []byte("service: org.freedesktop.hostname1\ninterface: org.freedesktop.hostname1\nproperties:\n  Location: {method: org.freedesktop.timedate1.SetTimezone, args: [$value, false]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(MappingsEnv, dir)
	r2 := newRig(t, New(os.Getenv(MappingsEnv)))
	_, err = state.Decode([]byte(`{"version":1,"plugins":{"dbus":{"objects":[`+obj(hostname1, `{"Location":"x"}`)+`]}}}`), state.FormatJSON, r2.e.Types(), r2.e.Validate)
	wantErr(t, err, "plugins.dbus: mappings ("+MappingsEnv+"="+dir+")", "evil.yaml: properties.Location.method", "calls methods of its own interface org.freedesktop.hostname1 only")
	_, err = r2.plan(r.doc(obj(hostname1, `{"Location":"x"}`)))
	wantErr(t, err, "dbus: unavailable: mappings", "evil.yaml: properties.Location.method")

	// A mapping whose method is not on its interface fails the plan.
	if err := os.WriteFile(filepath.Join(dir, "evil.yaml"), []byte("service: org.freedesktop.hostname1\ninterface: org.freedesktop.hostname1\nproperties:\n  Location: {method: SetTimezone, args: [$value, false]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r3 := newRig(t, New(dir))
	_, err = r3.plan(r3.doc(obj(hostname1, `{"Location":"x"}`)))
	wantErr(t, err, "objects[0].properties.Location: mapping "+filepath.Join(dir, "evil.yaml")+": properties.Location.method: interface org.freedesktop.hostname1 has no method SetTimezone")

	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Errorf("Location changed: %s → %s", before, got)
	}
}

// TestTestbedTimedateGetAllFails: timedated given an NTP unit it cannot ask
// systemd about answers GetAll with an error. The properties a document
// names are then read one by one, as busctl get-property reads them; NTP,
// which busctl cannot read either, is named in the error.
func TestTestbedTimedateGetAllFails(t *testing.T) {
	b := testbed.NewIdentity(t, testbed.WithNTPUnits("systemd-timesyncd.service"))
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	ctx := context.Background()
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.timedate1", "/org/freedesktop/timedate1",
		"org.freedesktop.DBus.Properties", "GetAll", "s", "org.freedesktop.timedate1"); err == nil {
		t.Fatalf("busctl: GetAll on timedate1 succeeds, the bed should make it fail: %s", out)
	}
	if out, err := b.Busctl(ctx, "get-property", "org.freedesktop.timedate1", "/org/freedesktop/timedate1",
		"org.freedesktop.timedate1", "NTP"); err == nil {
		t.Fatalf("busctl: NTP reads %s, the bed should make it fail", out)
	}
	r := newRig(t, New(""))

	q := r.query(r.doc(obj(timedate1, `{"LocalRTC":false,"Timezone":"UTC"}`)))
	t.Logf("query: %s", q)
	if rtc := busProp(t, b, "org.freedesktop.timedate1", "LocalRTC"); !strings.Contains(q, `"LocalRTC":`+strings.TrimPrefix(rtc, "b ")) {
		t.Errorf("query %s, busctl says LocalRTC %s", q, rtc)
	}
	if tz := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); !strings.Contains(q, `"Timezone":`+strings.TrimPrefix(tz, "s ")) {
		t.Errorf("query %s, busctl says Timezone %s", q, tz)
	}

	_, err := r.plan(r.doc(obj(timedate1, `{"LocalRTC":false,"NTP":false}`)))
	wantErr(t, err, "NTP", "No route to host")
	if err != nil && strings.Contains(err.Error(), "LocalRTC") {
		t.Errorf("the error names LocalRTC, which can be read: %v", err)
	}
}
