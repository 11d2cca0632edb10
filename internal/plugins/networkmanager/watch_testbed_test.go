package networkmanager

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// watching is one running Watch.
type watching struct {
	changed chan struct{} // one pending notification; changed() coalesces
	done    chan error
	cancel  context.CancelFunc
}

func startWatch(t *testing.T, p *Plugin) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{changed: make(chan struct{}, 1), done: make(chan error, 1), cancel: cancel}
	go func() {
		w.done <- p.Watch(ctx, func() {
			select {
			case w.changed <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Watch did not return 10s after its context ended")
		}
	})
	return w
}

// expect fails unless changed is called within 20s.
func (w *watching) expect(t *testing.T, nm *testbed.NetworkManager, after string) {
	t.Helper()
	select {
	case <-w.changed:
	case err := <-w.done:
		t.Fatalf("Watch returned (%v) instead of reporting %s", err, after)
	case <-time.After(20 * time.Second):
		t.Fatalf("changed not called within 20s after %s\n%s", after, nm.Log())
	}
}

// settle waits until changed has not been called for a second, so the
// next expect sees a notification caused by what the test does next, not
// the tail of the previous burst.
func (w *watching) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-w.changed:
			continue
		case err := <-w.done:
			t.Fatalf("Watch returned: %v", err)
		case <-time.After(time.Second):
			return
		}
	}
	t.Fatalf("NetworkManager's signals did not stop for a second within 30s: Watch would keep the daemon busy")
}

func nmcli(t *testing.T, nm *testbed.NetworkManager, args ...string) {
	t.Helper()
	if out, err := nm.Nmcli(tctx(t), args...); err != nil {
		t.Fatalf("nmcli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Watch calls changed once subscribed, after out-of-band profile changes
// (add, modify, up) made with nmcli, when NetworkManager restarts, and for
// changes made after the restart; not for a read-only nmcli; it returns
// nil when its context ends.
func TestTestbedWatch(t *testing.T) {
	nm, p, _ := bed(t)
	w := startWatch(t, p)
	w.expect(t, nm, "subscribing")
	w.settle(t)

	nmcli(t, nm, "general", "status")
	nmcli(t, nm, "connection", "show")
	select {
	case <-w.changed:
		t.Errorf("changed called after read-only nmcli commands")
	case <-time.After(time.Second):
	}

	nmcli(t, nm, "connection", "add", "type", "bridge", "con-name", "wbr0", "ifname", "wbr0",
		"connection.autoconnect", "no", "ipv4.method", "manual", "ipv4.addresses", "10.96.0.1/24", "ipv6.method", "disabled")
	w.expect(t, nm, "nmcli connection add")
	w.settle(t)
	nmcli(t, nm, "connection", "modify", "wbr0", "ipv4.addresses", "10.96.0.2/24")
	w.expect(t, nm, "nmcli connection modify")
	w.settle(t)
	nmcli(t, nm, "connection", "up", "wbr0")
	w.expect(t, nm, "nmcli connection up")
	w.settle(t)

	if err := nm.RestartNetworkManager(tctx(t)); err != nil {
		t.Fatal(err)
	}
	w.expect(t, nm, "a restart of NetworkManager")
	w.settle(t)
	// The subscription follows the new NetworkManager.
	nmcli(t, nm, "connection", "modify", "wbr0", "bridge.stp", "no")
	w.expect(t, nm, "nmcli connection modify after the restart")
	w.settle(t)

	w.cancel()
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("Watch returned %v after its context ended, want nil", err)
		}
		w.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return 10s after its context ended")
	}
}

// Watch returns an error when the bus goes away, so the daemon calls it
// again (with back-off) once the bus is back.
func TestTestbedWatchBusLost(t *testing.T) {
	nm, p, _ := bed(t)
	w := startWatch(t, p)
	w.expect(t, nm, "subscribing")
	if err := nm.StopBus(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err == nil || !strings.Contains(err.Error(), "lost the connection") {
			t.Errorf("Watch returned %v after the bus went away, want an error saying the connection was lost", err)
		}
		w.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not return 20s after the bus went away")
	}
	// And with no bus it fails at once, naming the bus.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Watch(ctx, func() {}); err == nil || !strings.Contains(err.Error(), nm.BusAddress[len("unix:path="):]) {
		t.Errorf("Watch without a bus: %v, want an error naming the bus", err)
	}
}

func TestWatchRelevant(t *testing.T) {
	for _, c := range []struct {
		s    *dbus.Signal
		want bool
	}{
		{nil, false},
		{&dbus.Signal{Sender: busIfc, Name: busIfc + ".NameOwnerChanged", Body: []any{busName, "", ":1.5"}}, true},
		{&dbus.Signal{Sender: busIfc, Name: busIfc + ".NameOwnerChanged", Body: []any{":1.9", ":1.9", ""}}, false},
		{&dbus.Signal{Sender: busIfc, Name: busIfc + ".NameAcquired", Body: []any{":1.4"}}, false},
		{&dbus.Signal{Sender: ":1.2", Name: nmIfc + ".CheckPermissions"}, false},
		{&dbus.Signal{Sender: ":1.2", Name: nmIfc + ".DeviceAdded"}, true},
		{&dbus.Signal{Sender: ":1.2", Name: connIfc + ".Updated"}, true},
		{&dbus.Signal{Sender: ":1.2", Name: propsIfc + ".PropertiesChanged", Body: []any{deviceIfc, map[string]dbus.Variant{}, []string{}}}, true},
		{&dbus.Signal{Sender: ":1.2", Name: propsIfc + ".PropertiesChanged", Body: []any{activeIfc, map[string]dbus.Variant{}, []string{}}}, true},
		{&dbus.Signal{Sender: ":1.2", Name: propsIfc + ".PropertiesChanged", Body: []any{ip4Ifc, map[string]dbus.Variant{}, []string{}}}, false},
		{&dbus.Signal{Sender: ":1.2", Name: propsIfc + ".PropertiesChanged", Body: []any{deviceIfc + ".Statistics"}}, false},
		{&dbus.Signal{Sender: ":1.2", Name: propsIfc + ".PropertiesChanged"}, false},
	} {
		if got := watchRelevant(c.s); got != c.want {
			t.Errorf("watchRelevant(%+v) = %v, want %v", c.s, got, c.want)
		}
	}
}
