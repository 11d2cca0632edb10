package introspect

import (
	"os"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed"
	"github.com/op-dbus/op-dbus/internal/testbed/testservice"
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

func serveTest(t testing.TB, items int) (*testbed.Bus, *testservice.Service) {
	t.Helper()
	b := testbed.NewBus(t)
	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := testservice.Serve(conn, testservice.Options{Items: items})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return b, s
}

func TestTestbedTestServiceMatchesBusctl(t *testing.T) {
	b, s := serveTest(t, 1000)
	res := walk(t, b.Address, testservice.Name)
	if got, want := res.Stats.Objects, len(s.Paths()); got != want {
		t.Fatalf("walked %d objects, the service exports %d", got, want)
	}
	if res.Stats.Errors != 0 {
		t.Fatalf("%d errors walking a well-behaved service", res.Stats.Errors)
	}
	assertMatchesBusctl(t, busctl{args: []string{"--address=" + b.Address}, env: b.Env}, res)
}
