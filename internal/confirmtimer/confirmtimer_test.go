package confirmtimer

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func TestUnits(t *testing.T) {
	tm, svc := Units("0123abcd")
	if tm != "op-dbus-confirm-0123abcd.timer" || svc != "op-dbus-confirm-0123abcd.service" {
		t.Errorf("Units: %s %s", tm, svc)
	}
	for _, id := range []string{"", "a/b", "a b", "a.b", "a\\x2d"} {
		if checkID(id) == nil {
			t.Errorf("ID %q accepted", id)
		}
	}
}

func TestRecoverArgv(t *testing.T) {
	got, err := RecoverArgv("/usr/bin/op-dbus", "/var/lib/op-dbus", true, "unix:/run/ovs.sock")
	want := []string{"/usr/bin/op-dbus", "recover", "--if-deadline-passed", "--state-dir", "/var/lib/op-dbus", "--user", "--ovsdb", "unix:/run/ovs.sock"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("RecoverArgv: %q %v", got, err)
	}
	got, _ = RecoverArgv("/usr/bin/op-dbus", "rel", false, "")
	if len(got) != 5 || got[4][0] != '/' {
		t.Errorf("relative state dir not made absolute: %q", got)
	}
	if _, err := RecoverArgv("op-dbus", "/x", false, ""); err == nil {
		t.Error("relative binary accepted")
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/x/bus")
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "")
	t.Setenv("XDG_RUNTIME_DIR", "/x")
	t.Setenv("HOME", "/home/x")
	want := []string{"DBUS_SESSION_BUS_ADDRESS=unix:path=/x/bus", "XDG_RUNTIME_DIR=/x", "HOME=/home/x"}
	if got := Env(); !slices.Equal(got, want) {
		t.Errorf("Env: %q", got)
	}
}

func TestUnavailableIsTyped(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &UnavailableError{Why: "org.freedesktop.systemd1 has no owner"})
	var ue *UnavailableError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) {
		t.Errorf("%v", err)
	}
}
