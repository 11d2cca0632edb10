package introspect

import (
	"os"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

func TestTestbedIdentityMatchesBusctl(t *testing.T) {
	b := testbed.NewIdentity(t)
	res := walk(t, b.BusAddress, "org.freedesktop.hostname1", "org.freedesktop.timedate1", "org.freedesktop.locale1")
	if res.Stats.Objects < 9 {
		t.Fatalf("only %d objects", res.Stats.Objects)
	}
	assertMatchesBusctl(t, busctl{args: []string{"--system"}, env: append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+b.BusAddress)}, res)
}

func TestTestbedUserManagerMatchesBusctl(t *testing.T) {
	m := testbed.NewUserManager(t)
	res := walk(t, m.BusAddress, "org.freedesktop.systemd1")
	if res.Stats.Objects < 10 {
		t.Fatalf("only %d objects", res.Stats.Objects)
	}
	assertMatchesBusctl(t, busctl{args: []string{"--user"}, env: m.Env}, res)
}
