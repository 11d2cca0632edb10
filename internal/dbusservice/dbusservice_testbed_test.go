package dbusservice

import (
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/testbed"

	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
)

// policyFile is the shipped bus policy, dist/org.opdbus1.conf.
func policyFile(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "dist", "org.opdbus1.conf")
}

type env struct {
	id  *testbed.Identity // hostname1 & co., what the service manages
	bus *testbed.Bus      // the "system bus" org.opdbus1 lives on, with the shipped policy
	srv *Server
	dir string
}

func start(t *testing.T, bus *testbed.Bus) *env {
	t.Helper()
	id := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", id.BusAddress)
	dir := t.TempDir()
	svc := control.New(control.Options{StateDir: dir, Source: "dbus"})
	t.Cleanup(func() { svc.Close() })
	conn, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	srv, err := Start(conn, svc, Options{Mode: "report", Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return &env{id: id, bus: bus, srv: srv, dir: dir}
}

// busctl calls org.opdbus1 on the policy bus, as root or (nobody=true) as
// uid 65534 through setpriv. It returns busctl's JSON output.
func (e *env) busctl(t *testing.T, nobody bool, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"busctl", "--address=" + e.bus.Address, "--json=short"}, args...)
	if nobody {
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	}
	return run(ctx, argv...)
}

// dbusSend calls a method as uid 65534 with dbus-send, which prints the
// error's name and message (busctl prints only "Access denied"), so the
// bus policy's refusal and the service's own can be told apart.
func (e *env) dbusSend(t *testing.T, member string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"env", "DBUS_SYSTEM_BUS_ADDRESS=" + e.bus.Address, "dbus-send", "--system", "--print-reply", "--dest=" + BusName, string(Path), Interface + "." + member}, args...)
	return run(ctx, argv...)
}

func (e *env) location(t *testing.T) string {
	out, err := e.id.Busctl(context.Background(), "get-property", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "Location")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

type busctlReply struct {
	Data []any `json:"data"`
}

func reply(t *testing.T, out string) []any {
	t.Helper()
	var r busctlReply
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("busctl output %q: %v", out, err)
	}
	return r.Data
}

func call(member string, args ...string) []string {
	return append([]string{"call", BusName, string(Path), Interface, member}, args...)
}

// The shipped policy on a bus with the system bus's default policy: anyone
// may Query and Plan; only root may Apply; Apply applies only this
// server's plan hashes, once, and refuses stale ones.
func TestPolicyAndPlanHashRule(t *testing.T) {
	e := start(t, testbed.NewSystemBus(t, policyFile(t)))

	out, err := e.busctl(t, true, call("Query", "as", "1", "hostname")...)
	if err != nil {
		t.Fatalf("Query as nobody: %v", err)
	}
	var q control.QueryResult
	if err := json.Unmarshal([]byte(reply(t, out)[0].(string)), &q); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.Plugins["hostname"]; !ok {
		t.Fatalf("Query returned no hostname state: %s", out)
	}

	want := "rack " + time.Now().Format("150405.000")
	doc := `{"version":1,"plugins":{"hostname":{"location":"` + want + `"}}}`
	out, err = e.busctl(t, true, call("Plan", "s", doc)...)
	if err != nil {
		t.Fatalf("Plan as nobody: %v", err)
	}
	hash := reply(t, out)[0].(string)
	if !strings.HasPrefix(hash, "sha256:") {
		t.Fatalf("plan hash %q", hash)
	}

	// nobody: the bus itself refuses (policy), nothing changes.
	before := e.location(t)
	out, err = e.dbusSend(t, "Apply", "string:"+hash)
	if err == nil || !strings.Contains(out, "AccessDenied: Rejected send message") {
		t.Fatalf("Apply as nobody was not refused: %v %s", err, out)
	}
	if got := e.location(t); got != before {
		t.Fatalf("refused Apply changed Location: %s → %s", before, got)
	}

	// Watch for Applied and PropertiesChanged while root applies.
	watch, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.AddMatchSignal(dbus.WithMatchObjectPath(Path)); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 16)
	watch.Signal(sigs)

	out, err = e.busctl(t, false, call("Apply", "s", hash)...)
	if err != nil {
		t.Fatalf("Apply as root: %v", err)
	}
	var res control.ApplyResult
	if err := json.Unmarshal([]byte(reply(t, out)[0].(string)), &res); err != nil || !res.Success {
		t.Fatalf("Apply result %s (%v)", out, err)
	}
	if got := e.location(t); !strings.Contains(got, want) {
		t.Fatalf("after Apply, busctl says Location %s, want %q", got, want)
	}
	waitSignal(t, sigs, Interface+".Applied", func(s *dbus.Signal) bool {
		return len(s.Body) == 3 && s.Body[0] == hash && s.Body[1] == true && s.Body[2] == "dbus"
	})

	// The same hash again: unknown (a plan applies once).
	out, err = e.busctl(t, false, call("Apply", "s", hash)...)
	if err == nil || !strings.Contains(out+err.Error(), "unknown plan hash") {
		t.Fatalf("second Apply of one plan: %v %s", err, out)
	}
	// A stale plan: the live state changes between Plan and Apply.
	doc2 := `{"version":1,"plugins":{"hostname":{"location":"stale-test"}}}`
	out, err = e.busctl(t, false, call("Plan", "s", doc2)...)
	if err != nil {
		t.Fatal(err)
	}
	hash2 := reply(t, out)[0].(string)
	if _, err := e.id.Busctl(context.Background(), "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "moved meanwhile", "false"); err != nil {
		t.Fatal(err)
	}
	out, err = e.busctl(t, false, call("Apply", "s", hash2)...)
	if err == nil || !strings.Contains(out+err.Error(), "stale plan") {
		t.Fatalf("stale Apply: %v %s", err, out)
	}
	if got := e.location(t); !strings.Contains(got, "moved meanwhile") {
		t.Fatalf("stale Apply changed Location to %s", got)
	}
	// Bad input: not a state document.
	out, err = e.busctl(t, false, call("Plan", "s", `{"version":1,"plugins":{"hostname":{"nope":1}}}`)...)
	if err == nil || !strings.Contains(out+err.Error(), "nope") {
		t.Fatalf("Plan of a bad document: %v %s", err, out)
	}

	// Drift: DriftDetected signal and the DriftCount property.
	e.srv.SetDrift("hostname", 2)
	waitSignal(t, sigs, Interface+".DriftDetected", func(s *dbus.Signal) bool {
		return len(s.Body) == 2 && s.Body[0] == "hostname" && s.Body[1] == uint32(2)
	})
	waitSignal(t, sigs, "org.freedesktop.DBus.Properties.PropertiesChanged", func(s *dbus.Signal) bool {
		ch, ok := s.Body[1].(map[string]dbus.Variant)
		return ok && ch["DriftCount"].Value() == uint32(2)
	})
	out, err = e.busctl(t, true, "get-property", BusName, string(Path), Interface, "DriftCount")
	if err != nil || !strings.Contains(out, `"data":2`) {
		t.Fatalf("DriftCount as nobody: %v %s", err, out)
	}
	out, err = e.busctl(t, true, "get-property", BusName, string(Path), Interface, "Mode")
	if err != nil || !strings.Contains(out, `"data":"report"`) {
		t.Fatalf("Mode: %v %s", err, out)
	}
	// Introspection lists the interface (busctl introspect as the oracle).
	out, err = e.busctl(t, true, "introspect", BusName, string(Path))
	if err != nil || !strings.Contains(out, "Apply") || !strings.Contains(out, "DriftDetected") {
		t.Fatalf("introspect: %v %s", err, out)
	}
}

// On a bus without the policy (a session bus, a relaxed system.d file)
// the service's own uid check still refuses Apply to other users.
func TestApplyChecksCallerUID(t *testing.T) {
	e := start(t, testbed.NewBus(t))
	if err := chmodBusDir(e.bus); err != nil {
		t.Fatal(err)
	}
	out, err := e.busctl(t, true, call("Plan", "s", `{"version":1,"plugins":{"hostname":{"location":"uid-test"}}}`)...)
	if err != nil {
		t.Fatal(err)
	}
	hash := reply(t, out)[0].(string)
	before := e.location(t)
	out, err = e.dbusSend(t, "Apply", "string:"+hash)
	if err == nil || !strings.Contains(out, "AccessDenied: Apply is allowed to root") {
		t.Fatalf("Apply as nobody on an open bus: %v %s", err, out)
	}
	if got := e.location(t); got != before {
		t.Fatalf("refused Apply changed Location: %s → %s", before, got)
	}
}

// Only one daemon owns the name.
func TestSecondOwnerRefused(t *testing.T) {
	e := start(t, testbed.NewSystemBus(t, policyFile(t)))
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	svc := control.New(control.Options{StateDir: t.TempDir()})
	defer svc.Close()
	if _, err := Start(conn, svc, Options{}); err == nil || !strings.Contains(err.Error(), "owned by another process") {
		t.Fatalf("second Start: %v", err)
	}
}

func waitSignal(t *testing.T, ch <-chan *dbus.Signal, name string, ok func(*dbus.Signal) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.Name == name && ok(s) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s signal within 10s", name)
		}
	}
}

// The system bus restarts under the daemon: the service comes back on the
// new bus by itself, drift count included.
func TestKeeperReconnectsAfterBusRestart(t *testing.T) {
	id := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", id.BusAddress)
	bus := testbed.NewSystemBus(t, policyFile(t))
	svc := control.New(control.Options{StateDir: t.TempDir(), Source: "dbus"})
	defer svc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := bus.Address
	k := Keep(ctx, func(ctx context.Context) (*dbus.Conn, error) {
		return dbus.Connect(addr) // not WithContext: that ctx would end the connection
	}, svc, Options{Mode: "enforce", Log: t.Logf})
	select {
	case <-k.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("service not on the bus within 20s")
	}
	k.SetDrift("hostname", 3)
	e := &env{bus: bus}
	if out, err := e.busctl(t, false, "get-property", BusName, string(Path), Interface, "DriftCount"); err != nil || !strings.Contains(out, `"data":3`) {
		t.Fatalf("before restart: %v %s", err, out)
	}
	nb, err := bus.Restart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nb.Close() })
	e.bus = nb
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := e.busctl(t, false, "get-property", BusName, string(Path), Interface, "DriftCount")
		if err == nil && strings.Contains(out, `"data":3`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not back on the restarted bus within 20s: %v %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := e.busctl(t, true, "get-property", BusName, string(Path), Interface, "Mode"); err != nil || !strings.Contains(out, "enforce") {
		t.Fatalf("Mode after restart: %v %s", err, out)
	}
}
