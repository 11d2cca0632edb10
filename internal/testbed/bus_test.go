package testbed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func TestBus(t *testing.T) {
	start := time.Now()
	b := NewBus(t)
	t.Logf("bus started in %v", time.Since(start))

	if want := "unix:path=" + filepath.Join(b.Dir, "bus"); b.Address != want {
		t.Errorf("Address = %q, want %q", b.Address, want)
	}
	if got := envValue(b.Env, "DBUS_SESSION_BUS_ADDRESS"); got != b.Address {
		t.Errorf("Env DBUS_SESSION_BUS_ADDRESS = %q, want %q", got, b.Address)
	}

	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const name = "org.opdbus.BusTest1"
	if r, err := conn.RequestName(name, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", r, err)
	}

	// busctl --user finds the bus through Env alone.
	out, err := runOutput(ctxT(t), b.Env, "busctl", "--user", "list", "--no-pager", "--no-legend")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, name) {
		t.Errorf("busctl --user list: no %s:\n%s", name, out)
	}
	out, err = b.Busctl(ctxT(t), "get-property", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Features")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Features: %s", strings.TrimSpace(out))

	// The session type and the permissive policy: anything may be sent
	// to anyone, and the session bus's big message limit applies (a bare
	// dbus-daemon's is 32 MiB).
	big := strings.Repeat("x", 33<<20)
	if err := conn.Export(echo{}, "/echo", "org.opdbus.BusTest1.Echo"); err != nil {
		t.Fatal(err)
	}
	client, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var got string
	if err := client.Object(name, "/echo").CallWithContext(ctxT(t), "org.opdbus.BusTest1.Echo.Echo", 0, big).Store(&got); err != nil {
		t.Fatalf("echo 33 MiB: %v", err)
	}
	if len(got) != len(big) {
		t.Errorf("echo 33 MiB: got %d bytes", len(got))
	}
}

type echo struct{}

func (echo) Echo(s string) (string, *dbus.Error) { return s, nil }

func TestBusClose(t *testing.T) {
	dir := bedTempDir(t, "tb-bus-")
	b, err := StartBus(ctxT(t), dir)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	pid := b.PID()
	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("dbus-daemon %d still exists after Close (kill 0: %v)", pid, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Object("org.freedesktop.DBus", "/org/freedesktop/DBus").CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err; err == nil {
		t.Error("call on the closed bus succeeded")
	}
	if c, err := dbus.Connect(b.Address); err == nil {
		c.Close()
		t.Error("connect to the closed bus succeeded")
	}
}

func TestConcurrentBuses(t *testing.T) {
	var buses [3]*Bus
	for i := range buses {
		buses[i] = NewBus(t)
	}
	for i, b := range buses {
		conn, err := dbus.Connect(b.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if r, err := conn.RequestName("org.opdbus.BusTest1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
			t.Fatalf("bus %d: RequestName: %v %v", i, r, err)
		}
	}
}

func TestStartBusRejectsBadDir(t *testing.T) {
	ctx := ctxT(t)
	if _, err := StartBus(ctx, ""); err == nil {
		t.Error("empty dir accepted")
	}
	if _, err := StartBus(ctx, "/nonexistent/tb-bus"); err == nil {
		t.Error("missing dir accepted")
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if err := os.MkdirAll(long, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := StartBus(ctx, long); err == nil {
		t.Error("too long dir accepted")
	}
}
