package dbusx_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

func TestTestbedSharedOneConnection(t *testing.T) {
	b := testbed.NewBus(t)
	bus := dbusx.Bus(b.Address)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = dbusx.CloseShared() })

	// Concurrent first callers get the same connection.
	const n = 8
	got := make([]*dbus.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = dbusx.Shared(ctx, bus) }()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Shared #%d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("Shared #%d returned another connection than #0", i)
		}
	}
	again, err := dbusx.Shared(ctx, bus)
	if err != nil || again != got[0] {
		t.Fatalf("Shared again: %v, same=%v", err, again == got[0])
	}
	if c := connections(t, ctx, again); c != 1 {
		t.Errorf("bus has %d client connections, want 1", c)
	}

	// A lost connection (here closed) is replaced.
	got[0].Close()
	fresh, err := dbusx.Shared(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	if fresh == got[0] || !fresh.Connected() {
		t.Fatalf("Shared after close: same=%v connected=%v", fresh == got[0], fresh.Connected())
	}
	if err := dbusx.CloseShared(); err != nil {
		t.Errorf("CloseShared: %v", err)
	}
	if fresh.Connected() {
		t.Error("CloseShared left the connection open")
	}
	other, err := dbusx.Shared(ctx, bus)
	if err != nil || other == fresh {
		t.Fatalf("Shared after CloseShared: %v, same=%v", err, other == fresh)
	}
}

// connections counts the bus's client connections (unique names other than
// the bus's own), as `busctl list --unique` would.
func connections(t *testing.T, ctx context.Context, c *dbus.Conn) int {
	t.Helper()
	var names []string
	if err := dbusx.Call(ctx, c.BusObject(), "org.freedesktop.DBus.ListNames", []any{&names}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range names {
		if len(s) > 0 && s[0] == ':' {
			n++
		}
	}
	return n
}

// matchRules is the bus's count of c's match rules (dbus-daemon's
// Debug.Stats interface), or -1 if the bus does not offer it.
func matchRules(t *testing.T, ctx context.Context, c *dbus.Conn) int {
	t.Helper()
	var st map[string]dbus.Variant
	err := dbusx.Call(ctx, c.Object("org.freedesktop.DBus", "/org/freedesktop/DBus"),
		"org.freedesktop.DBus.Debug.Stats.GetConnectionStats", []any{&st}, c.Names()[0])
	if err != nil {
		return -1
	}
	v, ok := st["MatchRules"].Value().(uint32)
	if !ok {
		t.Fatalf("GetConnectionStats: no MatchRules in %v", st)
	}
	return int(v)
}

func TestTestbedSubscribeFiltersAndCleansUp(t *testing.T) {
	b := testbed.NewBus(t)
	bus := dbusx.Bus(b.Address)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = dbusx.CloseShared() })
	conn, err := dbusx.Shared(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	emitter, err := dbusx.Open(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	defer emitter.Close()
	rules0 := matchRules(t, ctx, conn)

	// A flood on /b never reaches the /a subscriber's handler, and a
	// handler that blocks does not hold up the other subscriber.
	gotA := make(chan *dbus.Signal, 16)
	subA, err := dbusx.Subscribe(ctx, conn, func(s *dbus.Signal) { gotA <- s },
		dbusx.Match{Path: "/a", Interface: "org.example.T", Member: "Ping"})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	var once sync.Once
	subB, err := dbusx.Subscribe(ctx, conn, func(*dbus.Signal) { once.Do(func() { <-block }) },
		dbusx.Match{PathNamespace: "/b", Interface: "org.example.T"})
	if err != nil {
		t.Fatal(err)
	}
	if r := matchRules(t, ctx, conn); rules0 >= 0 && r != rules0+2 {
		t.Errorf("match rules after two subscriptions: %d, want %d", r, rules0+2)
	}
	for i := range 2000 {
		if err := emitter.Emit(dbus.ObjectPath("/b/x"), "org.example.T.Flood", uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := emitter.Emit("/a", "org.example.T.Pong"); err != nil { // wrong member
		t.Fatal(err)
	}
	if err := emitter.Emit("/a", "org.example.T.Ping", "hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-gotA:
		if s.Name != "org.example.T.Ping" || s.Path != "/a" {
			t.Fatalf("subscriber /a got %s on %s", s.Name, s.Path)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber /a got nothing while /b's handler blocked")
	}
	close(block)

	// Restarting a subscriber many times leaves no rule behind.
	for range 100 {
		s, err := dbusx.Subscribe(ctx, conn, func(*dbus.Signal) {}, dbusx.Match{Path: "/c", Interface: "org.example.T"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := subA.Close(); err != nil {
		t.Fatal(err)
	}
	if err := subB.Close(); err != nil {
		t.Fatal(err)
	}
	if r := matchRules(t, ctx, conn); rules0 >= 0 && r != rules0 {
		t.Errorf("match rules after closing every subscription: %d, want %d", r, rules0)
	} else if rules0 < 0 {
		t.Log("bus has no Debug.Stats: match rule counts not checked")
	}
	if !conn.Connected() {
		t.Fatal("closing subscriptions closed the shared connection")
	}

	// The connection's loss ends a subscription with Lost.
	sub, err := dbusx.Subscribe(ctx, conn, func(*dbus.Signal) {}, dbusx.Match{Path: "/d"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-sub.Done():
		if !sub.Lost() {
			t.Error("Done after the connection closed, but Lost is false")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscription did not end when its connection closed")
	}
	if err := sub.Close(); err != nil {
		t.Errorf("Close after loss: %v", err)
	}
}

func TestMatch(t *testing.T) {
	sig := &dbus.Signal{Sender: ":1.7", Path: "/org/freedesktop/hostname1",
		Name: "org.freedesktop.DBus.Properties.PropertiesChanged", Body: []any{"org.freedesktop.hostname1"}}
	for _, c := range []struct {
		m    dbusx.Match
		want bool
	}{
		{dbusx.Match{}, true},
		{dbusx.Match{Sender: "org.freedesktop.hostname1", Path: "/org/freedesktop/hostname1"}, true},
		{dbusx.Match{Sender: ":1.8"}, false},
		{dbusx.Match{Sender: "org.freedesktop.DBus"}, false},
		{dbusx.Match{PathNamespace: "/org/freedesktop"}, true},
		{dbusx.Match{PathNamespace: "/org/free"}, false},
		{dbusx.Match{Path: "/org/freedesktop/timedate1"}, false},
		{dbusx.Match{Interface: "org.freedesktop.DBus.Properties", Member: "PropertiesChanged"}, true},
		{dbusx.Match{Interface: "org.freedesktop.DBus"}, false},
		{dbusx.Match{Member: "JobRemoved"}, false},
		{dbusx.Match{Arg0: "org.freedesktop.hostname1"}, true},
		{dbusx.Match{Arg0: "org.freedesktop.locale1"}, false},
	} {
		if got := c.m.Matches(sig); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.m, got, c.want)
		}
	}
}
