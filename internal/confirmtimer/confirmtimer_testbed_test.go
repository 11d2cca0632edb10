package confirmtimer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// userBed starts systemd --user and connects to its session bus.
func userBed(t *testing.T) (*testbed.UserManager, *dbus.Conn) {
	t.Helper()
	m := testbed.NewUserManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dbusx.Open(ctx, dbusx.Bus(m.BusAddress))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return m, conn
}

// unitProps asks busctl --user, an independent client of the bed's
// manager, for the unit's properties; nil when the unit is not loaded.
func unitProps(t *testing.T, m *testbed.UserManager, unit string, props ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out, err := m.Busctl(ctx, "--timeout=5", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
		"org.freedesktop.systemd1.Manager", "GetUnit", "s", unit)
	if err != nil {
		if strings.Contains(out, "not loaded") {
			return nil
		}
		t.Fatalf("busctl GetUnit %s: %v", unit, err)
	}
	path := strings.Trim(strings.TrimPrefix(strings.TrimSpace(out), "o "), `"`)
	got := map[string]string{}
	for _, p := range props {
		iface := "org.freedesktop.systemd1.Unit"
		if strings.HasPrefix(p, "Timer.") || strings.HasPrefix(p, "Service.") {
			kind, name, _ := strings.Cut(p, ".")
			iface, p = "org.freedesktop.systemd1."+kind, name
		}
		out, err := m.Busctl(ctx, "--timeout=5", "get-property", "org.freedesktop.systemd1", path, iface, p)
		if err != nil {
			if strings.Contains(out, "Unknown object") || strings.Contains(out, "not loaded") {
				return nil // unloaded meanwhile
			}
			t.Fatalf("busctl get-property %s %s: %v", unit, p, err)
		}
		got[p] = strings.TrimSpace(out)
	}
	return got
}

func armEcho(t *testing.T, conn *dbus.Conn, id, file string, in time.Duration) *Timer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tm, err := Arm(ctx, conn, Spec{
		ID:       id,
		Deadline: time.Now().Add(in),
		Argv:     []string{"/bin/sh", "-c", `echo "fired $WHO" > "$1"`, "sh", file},
		Env:      []string{"WHO=confirmtimer-test"},
	})
	if err != nil {
		t.Fatalf("Arm: %v", err)
	}
	return tm
}

func TestTestbedTimerFiresAtDeadline(t *testing.T) {
	m, conn := userBed(t)
	file := filepath.Join(t.TempDir(), "fired")
	start := time.Now()
	tm := armEcho(t, conn, "fires0123", file, 2*time.Second)
	if tm.TimerUnit != "op-dbus-confirm-fires0123.timer" || tm.ServiceUnit != "op-dbus-confirm-fires0123.service" {
		t.Errorf("units %s %s", tm.TimerUnit, tm.ServiceUnit)
	}

	p := unitProps(t, m, tm.TimerUnit, "ActiveState", "SubState", "Timer.RemainAfterElapse", "Timer.AccuracyUSec", "Timer.TimersMonotonic", "Timer.TimersCalendar", "Timer.Unit")
	t.Logf("timer: %v", p)
	if p["ActiveState"] != `s "active"` || p["SubState"] != `s "waiting"` {
		t.Errorf("timer after Arm: %v", p)
	}
	if p["RemainAfterElapse"] != "b false" || p["AccuracyUSec"] != "t 1000000" || p["Unit"] != `s "op-dbus-confirm-fires0123.service"` {
		t.Errorf("timer properties: %v", p)
	}
	if !strings.Contains(p["TimersMonotonic"], `"OnActiveUSec"`) || !strings.Contains(p["TimersCalendar"], `"OnCalendar"`) {
		t.Errorf("timer triggers: %v", p)
	}
	if out, err := m.Systemctl(context.Background(), "list-timers", "--all", "--no-legend", "--no-pager"); err != nil || !strings.Contains(out, tm.TimerUnit) {
		t.Errorf("list-timers does not show %s: %v\n%s", tm.TimerUnit, err, out)
	}
	s := unitProps(t, m, tm.ServiceUnit, "LoadState", "ActiveState", "Service.Type", "Service.Environment", "Service.ExecStart")
	t.Logf("service: %v", s)
	if s["LoadState"] != `s "loaded"` || s["ActiveState"] != `s "inactive"` || s["Type"] != `s "oneshot"` ||
		!strings.Contains(s["Environment"], `"WHO=confirmtimer-test"`) || !strings.Contains(s["ExecStart"], `"/bin/sh"`) {
		t.Errorf("service before the deadline: %v", s)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the command ran before the deadline: %v", err)
	}

	var b []byte
	for {
		var err error
		if b, err = os.ReadFile(file); err == nil && len(b) > 0 {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("the command did not run within 15s of arming a 2s timer; manager log %s", filepath.Join(m.Dir, "manager.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("fired after %s, before the 2s deadline", el)
	}
	if string(b) != "fired confirmtimer-test\n" {
		t.Errorf("command wrote %q", b)
	}
	// RemainAfterElapse=no: the timer unloads (or at least ends) once it
	// has elapsed; the service ends when its command exits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tp := unitProps(t, m, tm.TimerUnit, "ActiveState")
		sp := unitProps(t, m, tm.ServiceUnit, "ActiveState")
		if (tp == nil || tp["ActiveState"] == `s "inactive"`) && (sp == nil || sp["ActiveState"] == `s "inactive"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after firing: timer %v, service %v", tp, sp)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Disarming after it fired is fine.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tm.Disarm(ctx); err != nil {
		t.Errorf("Disarm after firing: %v", err)
	}
}

func TestTestbedDisarmCancels(t *testing.T) {
	m, conn := userBed(t)
	file := filepath.Join(t.TempDir(), "fired")
	tm := armEcho(t, conn, "disarm0123", file, 2*time.Second)
	if p := unitProps(t, m, tm.TimerUnit, "ActiveState"); p["ActiveState"] != `s "active"` {
		t.Fatalf("timer after Arm: %v", p)
	}

	// From another connection, as `op-dbus commit` in another process would.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other, err := dbusx.Open(ctx, dbusx.Bus(m.BusAddress))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := Disarm(ctx, other, "disarm0123"); err != nil {
		t.Fatalf("Disarm: %v", err)
	}
	if p := unitProps(t, m, tm.TimerUnit, "ActiveState"); p != nil && p["ActiveState"] != `s "inactive"` {
		t.Errorf("timer after Disarm: %v", p)
	}
	if out, _ := m.Systemctl(ctx, "list-timers", "--all", "--no-legend", "--no-pager"); strings.Contains(out, tm.TimerUnit) {
		t.Errorf("list-timers still shows %s:\n%s", tm.TimerUnit, out)
	}
	time.Sleep(3500 * time.Millisecond) // past the deadline and the timer's accuracy
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the command ran although the timer was disarmed: %v", err)
	}
	// Again, and for an ID never armed: nothing to do, no error.
	if err := Disarm(ctx, other, "disarm0123"); err != nil {
		t.Errorf("second Disarm: %v", err)
	}
	if err := Disarm(ctx, other, "neverarmed"); err != nil {
		t.Errorf("Disarm of an unknown ID: %v", err)
	}
	if err := Available(ctx, other); err != nil {
		t.Errorf("Available on the bed: %v", err)
	}
}

func TestTestbedArmRefusesBadSpec(t *testing.T) {
	_, conn := userBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for name, s := range map[string]Spec{
		"id":       {ID: "a/b", Deadline: time.Now().Add(time.Minute), Argv: []string{"/bin/true"}},
		"relative": {ID: "x1", Deadline: time.Now().Add(time.Minute), Argv: []string{"true"}},
		"past":     {ID: "x2", Deadline: time.Now().Add(-time.Second), Argv: []string{"/bin/true"}},
	} {
		_, err := Arm(ctx, conn, s)
		if err == nil {
			t.Errorf("%s: Arm accepted %+v", name, s)
		}
		t.Logf("%s: %v", name, err)
	}
	// The same transaction twice: the second is refused by the manager.
	tm, err := Arm(ctx, conn, Spec{ID: "twice", Deadline: time.Now().Add(time.Minute), Argv: []string{"/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Arm(ctx, conn, Spec{ID: "twice", Deadline: time.Now().Add(time.Minute), Argv: []string{"/bin/true"}}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Arm of one ID: %v", err)
	}
	if err := tm.Disarm(ctx); err != nil {
		t.Error(err)
	}
}

// A bus without systemd (a bare private dbus-daemon) gives the typed error.
func TestTestbedNoSystemdOnBus(t *testing.T) {
	b := testbed.NewBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := dbusx.Open(ctx, dbusx.Bus(b.Address))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = Available(ctx, conn)
	t.Logf("Available: %v", err)
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "org.freedesktop.systemd1") {
		t.Errorf("Available: %v", err)
	}
	_, err = Arm(ctx, conn, Spec{ID: "nosd", Deadline: time.Now().Add(time.Minute), Argv: []string{"/bin/true"}})
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Arm: %v", err)
	}
	if err := Disarm(ctx, conn, "nosd"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Disarm: %v", err)
	}
}
