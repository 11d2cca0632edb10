package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

const goodUnit = "[Unit]\nDescription=op-dbus test %s\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"

// badUnit's ExecStart does not exist; Type=exec makes the start job fail.
const badUnit = "[Unit]\nDescription=op-dbus test broken\n[Service]\nType=exec\nExecStart=/nonexistent/op-dbus-test\n[Install]\nWantedBy=default.target\n"

func userBed(t *testing.T, units ...string) (*testbed.UserManager, []string) {
	t.Helper()
	m, env := userBedTB(t)
	for _, u := range units {
		content := strings.ReplaceAll(goodUnit, "%s", u)
		if strings.HasPrefix(u, "bad") {
			content = badUnit
		}
		// In the data dir, not the config dir: systemd refuses to mask a
		// unit whose file is where the mask link would go.
		if err := os.WriteFile(filepath.Join(m.DataUnitDir, u), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if len(units) > 0 {
		if out, err := m.Systemctl(context.Background(), "daemon-reload"); err != nil {
			t.Fatalf("daemon-reload: %v %s", err, out)
		}
	}
	return m, env
}

// userBedTB starts systemd --user and returns the environment that points
// op-dbus --user at it.
func userBedTB(t testing.TB) (*testbed.UserManager, []string) {
	m := testbed.NewUserManager(t)
	return m, []string{
		"DBUS_SESSION_BUS_ADDRESS=" + m.BusAddress,
		"XDG_RUNTIME_DIR=" + m.RuntimeDir,
		"XDG_CONFIG_HOME=" + m.ConfigHome,
	}
}

// oracle asks systemctl --user, an independent client of the same manager.
func oracle(t *testing.T, m *testbed.UserManager, verb, unit string) string {
	t.Helper()
	out, _ := m.Systemctl(context.Background(), verb, unit)
	return strings.TrimSpace(out)
}

func TestTestbedSystemdApplyVerifyDriftReapply(t *testing.T) {
	m, env := userBed(t, "demo-a.service", "demo-b.service")
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	doc := writeFile(t, dir, "host.json", `{"version": 1, "plugins": {"systemd": {"units": {
		"demo-a.service": {"active_state": "active", "enabled": true},
		"demo-b.service": {"active_state": "active"}}}}}`)

	r := run(t, env, "", "--user", sd, "diff", doc)
	wantCode(t, r, 2, "diff before apply")
	for _, w := range []string{"start demo-a.service", "enable demo-a.service", "start demo-b.service"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("plan lacks %q:\n%s", w, r.stdout)
		}
	}

	r = run(t, env, "", "--user", sd, "apply", doc)
	wantCode(t, r, 1, "apply without a terminal and without --yes")
	if !strings.Contains(r.stderr, "pass --yes") {
		t.Errorf("refusal does not say to pass --yes: %s", r.stderr)
	}
	if got := oracle(t, m, "is-active", "demo-a.service"); got != "inactive" {
		t.Fatalf("refused apply changed the host: demo-a is %s", got)
	}

	r = run(t, env, "", "--user", sd, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply")
	if !strings.Contains(r.stdout, "Verifying... ok") || !strings.Contains(r.stdout, "✓ start demo-a.service") {
		t.Errorf("apply output lacks progress or verification:\n%s", r.stdout)
	}
	for _, u := range []string{"demo-a.service", "demo-b.service"} {
		if got := oracle(t, m, "is-active", u); got != "active" {
			t.Errorf("systemctl --user is-active %s = %q after apply", u, got)
		}
	}
	if got := oracle(t, m, "is-enabled", "demo-a.service"); got != "enabled" {
		t.Errorf("demo-a is-enabled = %q", got)
	}
	if got := oracle(t, m, "is-enabled", "demo-b.service"); got != "disabled" {
		t.Errorf("demo-b was enabled though the document does not say so: %q", got)
	}

	if ops := planOps(t, env, "--user", sd, "diff", doc); len(ops) != 0 {
		t.Fatalf("second plan not empty: %v", ops)
	}
	r = run(t, env, "", "--user", sd, "apply", "--yes", "-o", "json", doc)
	wantCode(t, r, 0, "second apply")
	var out struct {
		Plan struct {
			Ops []any `json:"ops"`
		} `json:"plan"`
		Success bool `json:"success"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Plan.Ops) != 0 || !out.Success {
		t.Fatalf("second apply should plan zero ops: %v %s", err, r)
	}

	// Break it out of band.
	if o, err := m.Systemctl(context.Background(), "stop", "demo-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	r = run(t, env, "", "--user", sd, "verify", doc)
	wantCode(t, r, 2, "verify after drift")
	if !strings.Contains(r.stdout, `systemd.units["demo-a.service"].active_state desired "active", current "inactive"`) {
		t.Errorf("verify does not name the drift:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "demo-b") {
		t.Errorf("verify names a unit that did not drift:\n%s", r.stdout)
	}
	r = run(t, env, "", "--user", sd, "apply", "--yes", doc)
	wantCode(t, r, 0, "re-apply")
	r = run(t, env, "", "--user", sd, "verify", doc)
	wantCode(t, r, 0, "verify after re-apply")
	if got := oracle(t, m, "is-active", "demo-a.service"); got != "active" {
		t.Errorf("demo-a %q after re-apply", got)
	}
}

func TestTestbedSystemdFailedStartRollsBack(t *testing.T) {
	m, env := userBed(t, "good-1.service", "good-2.service", "bad-1.service")
	ctx := context.Background()
	if o, err := m.Systemctl(ctx, "start", "good-2.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.json", `{"version": 1, "plugins": {"systemd": {"units": {
		"good-1.service": {"active_state": "active", "enabled": true},
		"good-2.service": {"active_state": "inactive"},
		"bad-1.service": {"active_state": "active"}}}}}`)
	r := run(t, env, "", "--user", "--state-dir="+dir+"/state", "apply", "--yes", doc)
	wantCode(t, r, 1, "apply with a broken unit")
	for _, w := range []string{"start bad-1.service", "job failed", "rolled back and verified"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("error lacks %q:\n%s", w, r.stderr)
		}
	}
	if !strings.Contains(r.stdout, "Verifying rollback... ok") {
		t.Errorf("no rollback verification in output:\n%s", r.stdout)
	}
	// The oracle sees the state before apply.
	for unit, want := range map[string][2]string{
		"good-1.service": {"inactive", "disabled"},
		"good-2.service": {"active", "disabled"},
	} {
		if got := oracle(t, m, "is-active", unit); got != want[0] {
			t.Errorf("%s is-active %q after rollback, want %q", unit, got, want[0])
		}
		if got := oracle(t, m, "is-enabled", unit); got != want[1] {
			t.Errorf("%s is-enabled %q after rollback, want %q", unit, got, want[1])
		}
	}
}

func TestTestbedSystemdQueryRoundTrip(t *testing.T) {
	m, env := userBed(t, "rt-a.service", "rt-b.service", "rt-c.service")
	ctx := context.Background()
	for _, c := range [][]string{{"start", "rt-a.service"}, {"enable", "rt-b.service"}} {
		if o, err := m.Systemctl(ctx, c...); err != nil {
			t.Fatalf("%v %v %s", c, err, o)
		}
	}
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	r := run(t, env, "", "--user", sd, "query", "-p", "systemd")
	wantCode(t, r, 0, "query")
	now := writeFile(t, dir, "now.json", r.stdout)
	r = run(t, env, "", "--user", sd, "validate", now)
	wantCode(t, r, 0, "validate query output")

	if ops := planOps(t, env, "--user", sd, "diff", now); len(ops) != 0 {
		t.Fatalf("query output plans ops on an unchanged host: %v", ops)
	}
	// Out of band: stop a, disable b, mask c.
	for _, c := range [][]string{{"stop", "rt-a.service"}, {"disable", "rt-b.service"}, {"mask", "rt-c.service"}} {
		if o, err := m.Systemctl(ctx, c...); err != nil {
			t.Fatalf("%v %v %s", c, err, o)
		}
	}
	ops := planOps(t, env, "--user", sd, "diff", now)
	// Under a mask the unit's enablement cannot be read, so restoring
	// "enabled": false after unmasking disables it explicitly.
	want := []string{"systemd/start/rt-a.service", "systemd/enable/rt-b.service", "systemd/unmask/rt-c.service", "systemd/disable/rt-c.service", "systemd/daemon-reload"}
	for _, w := range want {
		if !slices.Contains(ops, w) {
			t.Errorf("plan after drift lacks %s: %v", w, ops)
		}
	}
	if len(ops) != len(want) {
		t.Errorf("plan after drift has %d ops, want exactly %v: %v", len(ops), want, ops)
	}
	r = run(t, env, "", "--user", sd, "apply", "--yes", now)
	wantCode(t, r, 0, "apply captured state")
	if got := oracle(t, m, "is-active", "rt-a.service"); got != "active" {
		t.Errorf("rt-a %q", got)
	}
	if got := oracle(t, m, "is-enabled", "rt-b.service"); got != "enabled" {
		t.Errorf("rt-b %q", got)
	}
	if got := oracle(t, m, "is-enabled", "rt-c.service"); got != "disabled" {
		t.Errorf("rt-c %q (still masked?)", got)
	}
	if ops := planOps(t, env, "--user", sd, "diff", now); len(ops) != 0 {
		t.Fatalf("plan after restore: %v", ops)
	}
}

func TestTestbedSystemdMaskAndStop(t *testing.T) {
	m, env := userBed(t, "mk.service")
	ctx := context.Background()
	if o, err := m.Systemctl(ctx, "start", "mk.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.yaml", "version: 1\nplugins:\n  systemd:\n    units:\n      mk.service:\n        active_state: inactive\n        masked: true\n")
	r := run(t, env, "", "--user", "--state-dir="+dir, "apply", "--yes", doc)
	wantCode(t, r, 0, "mask")
	if got := oracle(t, m, "is-enabled", "mk.service"); got != "masked" {
		t.Errorf("is-enabled %q, want masked", got)
	}
	if got := oracle(t, m, "is-active", "mk.service"); got != "inactive" {
		t.Errorf("is-active %q", got)
	}
	// A masked unit cannot start; saying so to systemctl proves the mask is real.
	if _, err := m.Systemctl(ctx, "start", "mk.service"); err == nil {
		t.Errorf("a masked unit started")
	}
}
