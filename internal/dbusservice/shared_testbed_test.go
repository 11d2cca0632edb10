package dbusservice

import (
	"context"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// On the process's shared connection the keeper owns the name while it
// runs; when it stops it releases the name and unexports the object, and
// the connection stays open for the others. A refused Start leaves
// nothing exported either.
func TestKeeperOnSharedConnection(t *testing.T) {
	bus := testbed.NewBus(t)
	b := dbusx.Bus(bus.Address)
	t.Cleanup(func() { _ = dbusx.CloseShared() })
	svc := control.New(control.Options{StateDir: t.TempDir(), Source: "dbus"})
	defer svc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := dbusx.Shared(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	other, err := dbusx.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	owned := func() bool {
		ok, err := dbusx.HasName(ctx, other, BusName)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// exported calls the Mode property on the shared connection's unique
	// name, which answers whether or not it owns BusName.
	exported := func() bool {
		_, err := dbusx.Get(ctx, other.Object(conn.Names()[0], Path), Interface, "Mode")
		return err == nil
	}

	kctx, kcancel := context.WithCancel(ctx)
	k := Keep(kctx, func(ctx context.Context) (*dbus.Conn, error) { return dbusx.Shared(ctx, b) },
		svc, Options{Mode: "report", Log: t.Logf})
	select {
	case <-k.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("service not on the bus within 20s")
	}
	if !owned() || !exported() {
		t.Fatalf("keeper running: name owned %v, object exported %v", owned(), exported())
	}
	kcancel()
	select {
	case <-k.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("keeper did not stop within 20s")
	}
	if !conn.Connected() {
		t.Fatal("stopping the keeper closed the shared connection")
	}
	if owned() || exported() {
		t.Fatalf("keeper stopped: name owned %v, object exported %v", owned(), exported())
	}

	// Someone else owns the name: Start on the shared connection fails
	// and leaves nothing behind.
	if _, err := other.RequestName(BusName, dbus.NameFlagDoNotQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := Start(conn, svc, Options{}); err == nil {
		t.Fatal("Start succeeded while another connection owns the name")
	}
	if exported() {
		t.Error("a refused Start left the object exported")
	}
	if _, err := other.ReleaseName(BusName); err != nil {
		t.Fatal(err)
	}
	// And it starts again on the same connection.
	srv, err := Start(conn, svc, Options{Mode: "enforce"})
	if err != nil {
		t.Fatalf("Start again on the shared connection: %v", err)
	}
	if !owned() || !exported() {
		t.Fatalf("restarted: name owned %v, object exported %v", owned(), exported())
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}
