package systemd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

func bed(t *testing.T) (*testbed.UserManager, *Plugin) {
	t.Helper()
	m := testbed.NewUserManager(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", m.BusAddress)
	t.Setenv("XDG_RUNTIME_DIR", m.RuntimeDir)
	unit := "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"
	for _, n := range []string{"q-active.service", "q-enabled.service", "q-masked.service", "q-plain.service", "q-tmpl@.service"} {
		if err := os.WriteFile(filepath.Join(m.DataUnitDir, n), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, c := range [][]string{{"daemon-reload"}, {"start", "q-active.service"}, {"enable", "q-enabled.service"}, {"mask", "q-masked.service"}, {"start", "q-tmpl@one.service"}} {
		if out, err := m.Systemctl(ctx, c...); err != nil {
			t.Fatalf("systemctl %v: %v %s", c, err, out)
		}
	}
	p := New(plugin.Options{User: true})
	t.Cleanup(func() { p.Close() })
	return m, p
}

// QueryFor must report exactly what Query reports for the named units.
func TestTestbedQueryForMatchesQuery(t *testing.T) {
	_, p := bed(t)
	ctx := context.Background()
	names := []string{"q-active.service", "q-enabled.service", "q-masked.service", "q-plain.service",
		"q-tmpl@.service", "q-tmpl@one.service", "does-not-exist.service", "-.slice", "default.target", "dbus.socket"}
	des := &State{Units: map[string]*Unit{}}
	for _, n := range names {
		des.Units[n] = &Unit{}
	}
	scoped, err := p.QueryFor(ctx, des)
	if err != nil {
		t.Fatal(err)
	}
	full, err := p.Query(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs := full.(*State)
	for _, n := range names {
		a, _ := json.Marshal(scoped.(*State).Units[n])
		b, _ := json.Marshal(fs.Units[n])
		if string(a) != string(b) {
			t.Errorf("%s: QueryFor %s, Query %s", n, a, b)
		}
	}
	if u := fs.Units["q-masked.service"]; u == nil || u.Masked == nil || !*u.Masked {
		t.Errorf("masked unit not reported masked: %+v", u)
	}
	if u := fs.Units["q-active.service"]; u == nil || u.ActiveState != "active" || u.SubState != "running" {
		t.Errorf("active unit: %+v", u)
	}
	if _, ok := fs.Units["does-not-exist.service"]; ok {
		t.Errorf("a unit that does not exist is reported")
	}
}

// A unit without an [Install] section cannot be enabled; the op must fail
// saying so instead of claiming success.
func TestTestbedEnableWithoutInstallFails(t *testing.T) {
	m, p := bed(t)
	if err := os.WriteFile(filepath.Join(m.DataUnitDir, "q-noinstall.service"), []byte("[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cur, err := p.Query(ctx)
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	ops, err := p.Plan(cur, &State{Units: map[string]*Unit{"q-noinstall.service": {Enabled: &yes}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 || ops[0].ID != "systemd/enable/q-noinstall.service" {
		t.Fatalf("want enable + reload, got %+v", ops)
	}
	err = p.Apply(ctx, plugin.Op{Data: plugin.MustData(opData{Kind: kindEnable, Unit: "q-noinstall.service"})})
	if err == nil || !strings.Contains(err.Error(), "no [Install] section") {
		t.Fatalf("enable without [Install]: %v", err)
	}
}

func TestTestbedUnavailableSaysWhy(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
	p := New(plugin.Options{User: true})
	err := p.Available(context.Background())
	if err == nil || !strings.Contains(err.Error(), "session bus") {
		t.Fatalf("want an error naming the session bus, got %v", err)
	}
}
