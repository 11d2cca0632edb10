package main

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

func identityBed(t *testing.T) (*testbed.Identity, []string) {
	t.Helper()
	b := testbed.NewIdentity(t)
	return b, []string{"DBUS_SYSTEM_BUS_ADDRESS=" + b.BusAddress}
}

func busProp(t *testing.T, b *testbed.Identity, svc, prop string) string {
	t.Helper()
	path := "/org/freedesktop/" + strings.TrimPrefix(svc, "org.freedesktop.")
	out, err := b.Busctl(context.Background(), "get-property", svc, path, svc, prop)
	if err != nil {
		t.Fatalf("busctl get-property %s %s: %v %s", svc, prop, err, out)
	}
	return strings.TrimSpace(out)
}

func inNS(t *testing.T, b *testbed.Identity, args ...string) string {
	t.Helper()
	out, err := b.Exec(context.Background(), args...)
	if err != nil {
		t.Fatalf("%v in the bed: %v %s", args, err, out)
	}
	return strings.TrimSpace(out)
}

func TestTestbedHostnameApplyAndHostUntouched(t *testing.T) {
	hostBefore, _ := os.Hostname()
	fileBefore, _ := os.ReadFile("/etc/hostname")
	b, env := identityBed(t)
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{
		"static_hostname":"opdbus-test","pretty_hostname":"op-dbus test host","chassis":"vm","deployment":"staging","location":"rack 7"}}}`)
	r := run(t, env, "", "--state-dir="+dir, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply hostname")
	if got := busProp(t, b, "org.freedesktop.hostname1", "StaticHostname"); got != `s "opdbus-test"` {
		t.Errorf("StaticHostname %s", got)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "rack 7"` {
		t.Errorf("Location %s", got)
	}
	if got := inNS(t, b, "cat", "/etc/hostname"); got != "opdbus-test" {
		t.Errorf("/etc/hostname in the bed: %q", got)
	}
	if got := inNS(t, b, "hostname"); got != "opdbus-test" {
		t.Errorf("kernel hostname in the bed: %q", got)
	}
	if ops := planOps(t, env, "--state-dir="+dir, "diff", doc); len(ops) != 0 {
		t.Errorf("second plan: %v", ops)
	}
	hostAfter, _ := os.Hostname()
	fileAfter, _ := os.ReadFile("/etc/hostname")
	if hostAfter != hostBefore || string(fileAfter) != string(fileBefore) {
		t.Fatalf("the host's own hostname changed: %q→%q, /etc/hostname %q→%q", hostBefore, hostAfter, fileBefore, fileAfter)
	}
}

func TestTestbedTransientHostnameMismatchRollsBack(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	before := busProp(t, b, "org.freedesktop.hostname1", "PrettyHostname")
	// hostnamed keeps the transient name equal to the static one, so this
	// document cannot hold: verification must fail and undo the pretty name.
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{
		"static_hostname":"static-one","hostname":"other-one","pretty_hostname":"changed"}}}`)
	r := run(t, env, "", "--state-dir="+dir, "apply", "--yes", doc)
	wantCode(t, r, 1, "impossible hostname document")
	if !strings.Contains(r.stdout, `hostname.hostname desired "other-one", current "static-one"`) {
		t.Errorf("verification failure does not name the field:\n%s", r)
	}
	if !strings.Contains(r.stderr, "verification failed") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "PrettyHostname"); got != before {
		t.Errorf("pretty hostname not rolled back: %s, was %s", got, before)
	}
}

func TestTestbedTimezoneAndLocale(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.yaml", "version: 1\nplugins:\n  timedate:\n    timezone: Europe/Berlin\n  locale:\n    locale: [LANG=de_DE.UTF-8, LC_TIME=en_GB.UTF-8]\n")
	r := run(t, env, "", "--state-dir="+dir, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply timezone and locale")
	if got := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); got != `s "Europe/Berlin"` {
		t.Errorf("Timezone %s", got)
	}
	if got := inNS(t, b, "readlink", "/etc/localtime"); !strings.HasSuffix(got, "Europe/Berlin") {
		t.Errorf("/etc/localtime in the bed -> %q", got)
	}
	if got := inNS(t, b, "cat", "/etc/default/locale"); !strings.Contains(got, "LANG=de_DE.UTF-8") {
		t.Errorf("/etc/default/locale in the bed: %q", got)
	}
	if host, _ := os.Readlink("/etc/localtime"); strings.HasSuffix(host, "Europe/Berlin") && !strings.HasSuffix(os.Getenv("TZ"), "Berlin") {
		t.Logf("note: the host's own zone is Europe/Berlin, so this check proves less")
	}
	if ops := planOps(t, env, "--state-dir="+dir, "diff", doc); len(ops) != 0 {
		t.Errorf("second plan: %v", ops)
	}
}

func TestTestbedBadTimezoneFailsCleanly(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	before := busProp(t, b, "org.freedesktop.timedate1", "Timezone")
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"timedate":{"timezone":"Mars/Olympus_Mons"}}}`)
	r := run(t, env, "", "--state-dir="+dir, "apply", "--yes", doc)
	wantCode(t, r, 1, "nonexistent zone")
	if !strings.Contains(r.stderr, "SetTimezone") {
		t.Errorf("error does not name the call: %s", r.stderr)
	}
	if got := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); got != before {
		t.Errorf("Timezone changed to %s", got)
	}
}

// The output of query re-applies to nothing, and after an out-of-band change
// plans exactly the op that restores it, for every identity plugin.
func TestTestbedIdentityQueryRoundTrip(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	sd := "--state-dir=" + dir
	ctx := context.Background()
	// locale1 cannot clear a locale once set, so start from a set one (this
	// host's may be empty; see TestTestbedLocaleCannotBeCleared).
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.locale1", "/org/freedesktop/locale1", "org.freedesktop.locale1", "SetLocale", "asb", "1", "LANG=C.UTF-8", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	r := run(t, env, "", sd, "query", "-p", "hostname", "-p", "timedate", "-p", "locale")
	wantCode(t, r, 0, "query")
	var q struct {
		Plugins map[string]json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil || len(q.Plugins) != 3 {
		t.Fatalf("query output: %v\n%s", err, r)
	}
	now := writeFile(t, dir, "now.json", r.stdout)
	if ops := planOps(t, env, sd, "diff", now); len(ops) != 0 {
		t.Fatalf("unchanged host plans %v", ops)
	}
	for _, c := range [][]string{
		{"call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetStaticHostname", "sb", "drifted", "false"},
		{"call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetLocation", "sb", "elsewhere", "false"},
		{"call", "org.freedesktop.timedate1", "/org/freedesktop/timedate1", "org.freedesktop.timedate1", "SetTimezone", "sb", "Asia/Tokyo", "false"},
		{"call", "org.freedesktop.locale1", "/org/freedesktop/locale1", "org.freedesktop.locale1", "SetLocale", "asb", "1", "LANG=fr_FR.UTF-8", "false"},
	} {
		if out, err := b.Busctl(ctx, c...); err != nil {
			t.Fatalf("out-of-band %v: %v %s", c, err, out)
		}
	}
	ops := planOps(t, env, sd, "diff", now)
	want := []string{"hostname/static_hostname", "hostname/hostname", "hostname/location", "timedate/timezone", "locale/locale"}
	for _, w := range want {
		if !slices.Contains(ops, w) {
			t.Errorf("plan lacks %s: %v", w, ops)
		}
	}
	if len(ops) != len(want) {
		t.Errorf("plan %v, want exactly %v", ops, want)
	}
	r = run(t, env, "", sd, "apply", "--yes", now)
	wantCode(t, r, 0, "restore")
	if ops := planOps(t, env, sd, "diff", now); len(ops) != 0 {
		t.Fatalf("after restore: %v", ops)
	}
	if got := busProp(t, b, "org.freedesktop.timedate1", "Timezone"); strings.Contains(got, "Tokyo") {
		t.Errorf("timezone not restored: %s", got)
	}
}

func TestTestbedLocaleCannotBeCleared(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	if out, err := b.Busctl(context.Background(), "call", "org.freedesktop.locale1", "/org/freedesktop/locale1", "org.freedesktop.locale1", "SetLocale", "asb", "1", "LANG=C.UTF-8", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	doc := writeFile(t, dir, "l.json", `{"version":1,"plugins":{"locale":{"locale":[]}}}`)
	r := run(t, env, "", "--state-dir="+dir, "diff", doc)
	wantCode(t, r, 1, "diff of an impossible locale")
	if !strings.Contains(r.stderr, "locale1 ignores an empty list") {
		t.Errorf("error does not explain: %s", r.stderr)
	}
	if got := busProp(t, b, "org.freedesktop.locale1", "Locale"); got != `as 1 "LANG=C.UTF-8"` {
		t.Errorf("Locale %s", got)
	}
}
