package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const (
	// StartUnit of systemd --user: only on the bed's session bus.
	sessionStartUnit = "dbus/session/org.freedesktop.systemd1/org/freedesktop/systemd1#org.freedesktop.systemd1.Manager/method/StartUnit"
	// SetStaticHostname of hostnamed: only on the bed's system bus.
	systemSetStatic = "dbus/system/org.freedesktop.hostname1/org/freedesktop/hostname1#org.freedesktop.hostname1/method/SetStaticHostname"
)

type indexStats struct {
	Documents int            `json:"documents"`
	Buses     map[string]int `json:"buses"`
	Sources   map[string]int `json:"sources"`
	Selection struct {
		Buses        []string `json:"buses"`
		DefaultBuses bool     `json:"default_buses"`
	} `json:"selection"`
}

func statsJSON(t *testing.T, env []string, dir string) indexStats {
	t.Helper()
	r := run(t, env, "", "--state-dir="+dir, "index", "stats", "-o", "json")
	wantCode(t, r, 0, "index stats")
	var st indexStats
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("index stats -o json: %v\n%s", err, r.stdout)
	}
	return st
}

type buildOut struct {
	Documents int `json:"documents"`
	Buses     []struct {
		Bus       string `json:"bus"`
		Services  int    `json:"services"`
		Documents int    `json:"documents"`
		Skipped   string `json:"skipped"`
	} `json:"buses"`
}

func buildJSON(t *testing.T, env []string, what string, args ...string) (buildOut, result) {
	t.Helper()
	r := run(t, env, "", append(args, "-o", "json")...)
	wantCode(t, r, 0, what)
	var out buildOut
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%s -o json: %v\n%s", what, err, r)
	}
	return out, r
}

// TestTestbedSearchIndexTwoBuses indexes the bed's two buses (hostnamed
// on the system bus, systemd --user on the session bus) through the
// binary: a search finds a member of each, `index update` after a change
// on each keeps both, and a build without --bus takes both when both
// answer and says on stderr when the session bus does not.
func TestTestbedSearchIndexTwoBuses(t *testing.T) {
	b, env := identityBed(t)
	m, uenv := userBed(t, "twobus-probe.service")
	env = append(env, uenv...)
	dir := t.TempDir()
	sd := "--state-dir=" + dir

	out, r := buildJSON(t, env, "index build --bus system --bus session", sd, "index", "build", "--bus", "system", "--bus", "session", "--no-plugins")
	if len(out.Buses) != 2 || out.Buses[0].Bus != "system" || out.Buses[1].Bus != "session" ||
		out.Buses[0].Skipped != "" || out.Buses[1].Skipped != "" || out.Buses[0].Documents == 0 || out.Buses[1].Documents == 0 {
		t.Fatalf("buses: %+v\n%s", out.Buses, r)
	}
	for _, want := range []string{"indexed the system bus", "indexed the session bus"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	// a member only on the session bus, one only on the system bus
	if rk := rankOf(searchJSON(t, env, dir, "--kind", "method", "StartUnit"), sessionStartUnit); rk < 1 || rk > 3 {
		t.Errorf("StartUnit of the session bus at rank %d", rk)
	}
	if rk := rankOf(searchJSON(t, env, dir, "--kind", "method", "SetStaticHostname"), systemSetStatic); rk < 1 || rk > 3 {
		t.Errorf("SetStaticHostname of the system bus at rank %d", rk)
	}
	// the same standard interface on both buses: two documents, two IDs
	hits := searchJSON(t, env, dir, "-k", "50", "--kind", "service", "org.freedesktop.DBus")
	var buses []string
	for _, h := range hits {
		if strings.HasSuffix(h.Document.ID, "/org.freedesktop.DBus") {
			buses = append(buses, strings.Split(h.Document.ID, "/")[1])
		}
	}
	slices.Sort(buses)
	if !slices.Equal(buses, []string{"session", "system"}) {
		t.Errorf("org.freedesktop.DBus of both buses: %v", buses)
	}
	before := statsJSON(t, env, dir)
	if before.Buses["system"] != out.Buses[0].Documents || before.Buses["session"] != out.Buses[1].Documents ||
		!slices.Equal(before.Selection.Buses, []string{"system", "session"}) || before.Selection.DefaultBuses {
		t.Fatalf("stats: %+v, build: %+v", before, out.Buses)
	}
	r = run(t, env, "", sd, "index", "stats")
	wantCode(t, r, 0, "index stats")
	if !strings.Contains(r.stdout, "BUS") || !strings.Contains(r.stdout, "session  ") {
		t.Errorf("stats text lacks the per-bus table:\n%s", r.stdout)
	}

	// a change on each bus, then update: both buses' documents are kept
	// and both changes are found
	ctx := context.Background()
	if o, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetPrettyHostname", "sb", "Zanzibar Quokka", "false"); err != nil {
		t.Fatalf("SetPrettyHostname: %v %s", err, o)
	}
	if o, err := m.Systemctl(ctx, "start", "twobus-probe.service"); err != nil {
		t.Fatalf("start twobus-probe.service: %v %s", err, o)
	}
	up, r := buildJSON(t, env, "index update", sd, "index", "update")
	if len(up.Buses) != 2 || up.Buses[0].Skipped != "" || up.Buses[1].Skipped != "" {
		t.Fatalf("update buses: %+v\n%s", up.Buses, r)
	}
	after := statsJSON(t, env, dir)
	// (hostnamed, timedated and localed exit when idle: a service that
	// stopped is gone from the index, so count hostname1's documents)
	const hostname1 = "dbus/system/org.freedesktop.hostname1"
	if after.Buses["system"] == 0 || after.Sources[hostname1] != before.Sources[hostname1] || after.Sources[hostname1] == 0 ||
		after.Buses["session"] <= before.Buses["session"] {
		t.Errorf("per bus before %v, after update %v", before.Buses, after.Buses)
	}
	hits = searchJSON(t, env, dir, "Zanzibar Quokka")
	if len(hits) == 0 || !strings.HasPrefix(hits[0].Document.ID, "dbus/system/org.freedesktop.hostname1/") {
		t.Errorf("the pretty hostname after update: %+v", hits)
	}
	hits = searchJSON(t, env, dir, "--kind", "object", "twobus-probe.service")
	if len(hits) == 0 || !strings.HasPrefix(hits[0].Document.ID, "dbus/session/org.freedesktop.systemd1/org/freedesktop/systemd1/unit/twobus") {
		t.Errorf("the started unit after update: %+v", hits)
	}

	// no --bus with both buses reachable: both
	dflt := t.TempDir()
	out, r = buildJSON(t, env, "index build (default buses)", "--state-dir="+dflt, "index", "build", "--no-plugins", "--no-audit")
	if len(out.Buses) != 2 || out.Buses[0].Skipped != "" || out.Buses[1].Skipped != "" {
		t.Fatalf("default buses: %+v\n%s", out.Buses, r)
	}
	if st := statsJSON(t, env, dflt); st.Buses["system"] == 0 || st.Buses["session"] == 0 || !st.Selection.DefaultBuses {
		t.Errorf("default build stats: %+v", st)
	}
	if rk := rankOf(searchJSON(t, env, dflt, "--kind", "method", "StartUnit"), sessionStartUnit); rk < 1 || rk > 3 {
		t.Errorf("default build: StartUnit of the session bus at rank %d", rk)
	}
	// the session bus gone: update says so and keeps its documents
	noSession := append(slices.Clone(env), "DBUS_SESSION_BUS_ADDRESS=unix:path="+dflt+"/no-such-bus")
	up, r = buildJSON(t, noSession, "index update without a session bus", "--state-dir="+dflt, "index", "update")
	if len(up.Buses) != 2 || up.Buses[0].Skipped != "" || up.Buses[1].Skipped == "" ||
		!strings.Contains(r.stderr, "skipped the session bus") || !strings.Contains(r.stderr, "kept") {
		t.Errorf("update without a session bus: %+v\n%s", up.Buses, r)
	}
	if st := statsJSON(t, env, dflt); st.Buses["session"] == 0 {
		t.Errorf("the session bus's documents were dropped: %+v", st)
	}
	// a default build without a session bus: the system bus alone, and why
	alone := t.TempDir()
	out, r = buildJSON(t, noSession, "index build without a session bus", "--state-dir="+alone, "index", "build", "--no-plugins", "--no-audit")
	if len(out.Buses) != 2 || out.Buses[0].Skipped != "" || !strings.Contains(out.Buses[1].Skipped, "no-such-bus") ||
		!strings.Contains(r.stderr, "indexed the system bus") || !strings.Contains(r.stderr, "skipped the session bus") {
		t.Errorf("default build without a session bus: %+v\n%s", out.Buses, r)
	}
	// but a session bus that was asked for is an error
	r = run(t, noSession, "", "--state-dir="+alone, "index", "build", "--bus", "system", "--bus", "session")
	wantCode(t, r, 1, "index build --bus session without a session bus")
	if !strings.Contains(r.stderr, "session bus") {
		t.Errorf("--bus session without one: %s", r)
	}
	r = run(t, env, "", "--state-dir="+alone, "index", "build", "--bus", "sytem")
	wantCode(t, r, 1, "--bus sytem")
	if !strings.Contains(r.stderr, `--bus "sytem"`) {
		t.Errorf("--bus sytem: %s", r)
	}
	r = run(t, env, "", "index", "build", "--help")
	if !strings.Contains(r.stdout, "--bus system --bus session") || !strings.Contains(r.stdout, "repeatable") {
		t.Errorf("index build --help:\n%s", r.stdout)
	}
}
