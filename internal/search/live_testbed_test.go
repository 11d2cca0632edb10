package search_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/search"
	"github.com/op-dbus/op-dbus/internal/testbed"
	"github.com/op-dbus/op-dbus/internal/testbed/testservice"

	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
	_ "github.com/op-dbus/op-dbus/internal/plugins/locale"
	_ "github.com/op-dbus/op-dbus/internal/plugins/systemd"
	_ "github.com/op-dbus/op-dbus/internal/plugins/timedate"
)

// live is the test bed the labelled queries run over: hostnamed,
// timedated and localed on a private system bus ("system"), systemd --user
// on its session bus ("session"), org.opdbus.Test1 with 1000 items on a
// bus of its own ("test"), the hostname/timedate/locale/systemd plugin
// states read from those daemons, and an audit log written through the
// ledger.
type live struct {
	identity *testbed.Identity
	user     *testbed.UserManager
	test     *testbed.Bus
	stateDir string
	sources  map[string][]search.Document
}

func startLive(t *testing.T) *live {
	t.Helper()
	l := &live{identity: testbed.NewIdentity(t), user: testbed.NewUserManager(t), test: testbed.NewBus(t), stateDir: t.TempDir()}
	conn, err := dbus.Connect(l.test.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	svc, err := testservice.Serve(conn, testservice.Options{Items: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", l.identity.BusAddress)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", l.user.BusAddress)
	// a unit that fails, for "which units failed"
	if err := l.user.WriteUnit("opdbus-broken.service", "[Unit]\nDescription=op-dbus search test unit that fails\n[Service]\nType=oneshot\nExecStart=/bin/false\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := l.user.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v %s", err, out)
	}
	_, _ = l.user.Systemctl(ctx, "start", "opdbus-broken.service") // fails, as meant
	l.writeAudit(t)
	l.collect(t)
	return l
}

// walk introspects a bus of the bed under a label.
func walk(t *testing.T, address, label string, services ...string) *introspect.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := dbusx.Open(ctx, dbusx.Bus(address))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := &introspect.Walker{Conn: conn, Bus: label, Services: services}
	res, err := w.Walk(ctx)
	if err != nil {
		t.Fatalf("walk %s: %v", label, err)
	}
	return res
}

// collect reads every source: three buses, four plugin states, the audit log.
func (l *live) collect(t *testing.T) {
	t.Helper()
	l.sources = map[string][]search.Document{}
	add := func(docs []search.Document) {
		for _, d := range docs {
			l.sources[d.Source] = append(l.sources[d.Source], d)
		}
	}
	add(search.FromIntrospection(walk(t, l.identity.BusAddress, "system",
		"org.freedesktop.hostname1", "org.freedesktop.timedate1", "org.freedesktop.locale1")))
	add(search.FromIntrospection(walk(t, l.user.BusAddress, "session", "org.freedesktop.systemd1")))
	add(search.FromIntrospection(walk(t, l.test.Address, "test", testservice.Name)))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, user := range []bool{false, true} {
		for _, p := range plugin.New(plugin.Options{User: user, StateDir: l.stateDir}) {
			if user != (p.Name() == "systemd") {
				continue
			}
			st, err := p.Query(ctx)
			if err != nil {
				t.Fatalf("query %s: %v", p.Name(), err)
			}
			flags := ""
			if user {
				flags = "--user"
			}
			docs, err := search.FromPluginState(p.Name(), st, flags)
			if err != nil {
				t.Fatal(err)
			}
			add(docs)
			if c, ok := p.(plugin.Closer); ok {
				_ = c.Close()
			}
		}
	}
	lg, err := ledger.Open(filepath.Join(l.stateDir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	es, err := lg.Entries(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	add(search.FromAudit(es, "--state-dir="+l.stateDir))
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

// writeAudit appends the entries an operator's host would have: applies
// that succeeded, failed and rolled back, drift, a refusal, a restore.
func (l *live) writeAudit(t *testing.T) {
	t.Helper()
	lg, err := ledger.Open(filepath.Join(l.stateDir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	day := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	root := ledger.Actor{UID: 0, User: "root"}
	es := []ledger.Entry{
		{Time: day, Kind: "apply", Source: "cli", Actor: root, Plugins: []string{"hostname"}, Result: "success", Verified: yes(),
			Ops: []ledger.OpRecord{{ID: "hostname/set/static_hostname", Plugin: "hostname", Description: "set static hostname to web1", Status: "applied"}}},
		{Time: day.Add(time.Hour), Kind: "apply", Source: "cli", Actor: root, Plugins: []string{"timedate"}, Result: "success", Verified: yes(),
			Ops: []ledger.OpRecord{{ID: "timedate/set/timezone", Plugin: "timedate", Description: "set timezone to Europe/Berlin", Status: "applied"}}},
		{Time: day.Add(2 * time.Hour), Kind: "apply", Source: "api", Actor: root, Plugins: []string{"systemd"}, Result: "rolled-back", Verified: no(),
			Message: "verification failed: nginx.service active_state desired active, current failed",
			Ops: []ledger.OpRecord{{ID: "systemd/start/nginx.service", Plugin: "systemd", Description: "start nginx.service", Status: "failed",
				Error: "job for nginx.service failed: unit entered failed state"}}},
		{Time: day.Add(3 * time.Hour), Kind: "drift", Source: "daemon", Actor: root, Plugins: []string{"locale"}, Result: "detected",
			Message: "locale drifted: x11_layout desired de, current us"},
		{Time: day.Add(4 * time.Hour), Kind: "refused", Source: "mcp", Actor: ledger.Actor{UID: 1000, User: "alice", Client: "mcp:claude"}, Result: "refused",
			Message: "apply refused: stale plan, the live state changed since planning"},
		{Time: day.Add(5 * time.Hour), Kind: "restore", Source: "cli", Actor: root, Plugins: []string{"hostname", "timedate"}, Result: "success",
			Message: "snapshot 3 restored",
			Ops:     []ledger.OpRecord{{ID: "hostname/set/pretty_hostname", Plugin: "hostname", Description: "set pretty hostname to Web One", Status: "applied"}}},
		{Time: day.Add(6 * time.Hour), Kind: "apply", Source: "cli", Actor: root, Plugins: []string{"ovs"}, Result: "success", Verified: yes(),
			Ops: []ledger.OpRecord{{ID: "ovs/add/br-lan", Plugin: "ovs", Description: "add bridge br-lan with port eth1", Status: "applied"},
				{ID: "ovs/set/br-lan/stp", Plugin: "ovs", Description: "enable STP on bridge br-lan", Status: "applied"}}},
		{Time: day.Add(7 * time.Hour), Kind: "apply", Source: "cli", Actor: root, Plugins: []string{"wireguard"}, Result: "success", Verified: yes(),
			Ops: []ledger.OpRecord{{ID: "wireguard/peer/wg0", Plugin: "wireguard", Description: "add peer to wg0 (endpoint 10.99.0.2:51820)", Status: "applied",
				Data: json.RawMessage(`{"private_key":"cHJpdmF0ZS1rZXktdGhhdC1tdXN0LW5vdC1sZWFr","endpoint":"10.99.0.2:51820"}`)}}},
		{Time: day.Add(8 * time.Hour), Kind: "rollback", Source: "cli", Actor: root, Plugins: []string{"timedate"}, Result: "success",
			Message: "rollback of transaction 2: timezone back to UTC",
			Ops:     []ledger.OpRecord{{ID: "timedate/set/timezone", Plugin: "timedate", Description: "set timezone to UTC", Status: "applied"}}},
		{Time: day.Add(9 * time.Hour), Kind: "apply", Source: "cli", Actor: root, Plugins: []string{"systemd"}, Result: "success", Verified: yes(),
			Ops: []ledger.OpRecord{{ID: "systemd/enable/backup.timer", Plugin: "systemd", Description: "enable backup.timer", Status: "applied"},
				{ID: "systemd/start/backup.timer", Plugin: "systemd", Description: "start backup.timer", Status: "applied"}}},
	}
	for _, e := range es {
		if _, err := lg.Append(e); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTestbedDumpCorpus writes the live corpus to SEARCH_DUMP (for
// labelling queries); it does nothing without it.
func TestTestbedDumpCorpus(t *testing.T) {
	out := os.Getenv("SEARCH_DUMP")
	if out == "" {
		t.Skip("set SEARCH_DUMP=FILE to dump the live corpus")
	}
	l := startLive(t)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	n := 0
	for _, docs := range l.sources {
		for _, d := range docs {
			_ = enc.Encode(d)
			n++
		}
	}
	t.Logf("%d documents", n)
}
