package main

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// `op-dbus serve --dbus ADDRESS` owns org.opdbus1 on a bus with the system
// bus's default policy and the shipped dist/org.opdbus1.conf: drift shows
// as DriftDetected and DriftCount, Query and Plan answer, and Apply of a
// plan (as root) changes the host, seen by systemctl, and signals Applied.
func TestTestbedServeDBusService(t *testing.T) {
	m, env := serveBed(t, "dbus-a.service")
	bus := testbed.NewSystemBus(t, filepath.Join("..", "..", "dist", "org.opdbus1.conf"))
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"dbus-a.service":{"active_state":"active"}}}}}`)

	watch, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.AddMatchSignal(dbus.WithMatchObjectPath("/org/opdbus1")); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 64)
	watch.Signal(sigs)
	seenSigs = nil

	s := startServe(t, env, "--user", "--state-dir="+dir+"/state", "serve", "--state", doc, "--dbus", bus.Address)
	busctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "busctl", append([]string{"--address=" + bus.Address, "--json=short"}, args...)...).CombinedOutput()
		return string(out), err
	}
	// The name appears once the daemon is ready (the keeper may take a moment).
	deadline := time.Now().Add(eventWait)
	for {
		out, err := busctl("get-property", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Mode")
		if err == nil && strings.Contains(out, `"report"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("org.opdbus1 not on the bus: %v %s\n%s", err, out, s.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if o, err := m.Systemctl(context.Background(), "stop", "dbus-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	drifted := waitSig(t, sigs, "org.opdbus1.Manager.DriftDetected", func(sg *dbus.Signal) bool {
		return sg.Body[0] == "systemd" && sg.Body[1] == uint32(1)
	})
	if out, err := busctl("get-property", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "DriftCount"); err != nil || !strings.Contains(out, `"data":1`) {
		t.Errorf("DriftCount after drift: %v %s", err, out)
	}

	out, err := busctl("call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Query", "as", "1", "systemd")
	if err != nil || !strings.Contains(out, `dbus-a.service`) {
		t.Fatalf("Query over D-Bus: %v %s", err, out)
	}
	out, err = busctl("call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Plan", "s",
		`{"version":1,"plugins":{"systemd":{"units":{"dbus-a.service":{"active_state":"active"}}}}}`)
	if err != nil {
		t.Fatalf("Plan over D-Bus: %v %s", err, out)
	}
	var plan struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Data) != 2 || !strings.Contains(plan.Data[1], "systemd/start/dbus-a.service") {
		t.Fatalf("Plan reply: %v %s", err, out)
	}
	out, err = busctl("call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Apply", "s", plan.Data[0])
	if err != nil || !strings.Contains(out, `\"success\":true`) {
		t.Fatalf("Apply over D-Bus: %v %s", err, out)
	}
	if got := oracle2(m, "is-active", "dbus-a.service"); got != "active" {
		t.Errorf("after Apply over D-Bus, systemctl says %q", got)
	}
	waitSig(t, sigs, "org.opdbus1.Manager.Applied", func(sg *dbus.Signal) bool {
		return sg.Body[0] == plan.Data[0] && sg.Body[1] == true && sg.Body[2] == "dbus"
	})
	// Back in line: the daemon sees the start and the count drops to 0
	// (after the drift, not the 0 of the first check).
	waitSig(t, sigs, "org.freedesktop.DBus.Properties.PropertiesChanged", func(sg *dbus.Signal) bool {
		ch, ok := sg.Body[1].(map[string]dbus.Variant)
		return ok && ch["DriftCount"].Value() == uint32(0)
	}, drifted)
	if kinds := auditKinds(t, env, dir+"/state"); !serveHas(kinds, "apply/dbus/success") {
		t.Errorf("D-Bus apply not in the audit log: %v", kinds)
	}
}

// waitSig waits for a signal named name that satisfies ok. Signals are
// kept once seen, so one that arrived while waiting for another (the order
// of Applied and PropertiesChanged is not fixed) is still found.
// It returns the signal's index in seenSigs; only signals from index from
// on are considered.
func waitSig(t *testing.T, ch <-chan *dbus.Signal, name string, ok func(*dbus.Signal) bool, from ...int) int {
	t.Helper()
	start := 0
	if len(from) > 0 {
		start = from[0]
	}
	for i := start; i < len(seenSigs); i++ {
		if sg := seenSigs[i]; sg.Name == name && ok(sg) {
			return i
		}
	}
	deadline := time.After(eventWait)
	for {
		select {
		case sg := <-ch:
			seenSigs = append(seenSigs, sg)
			if sg.Name == name && ok(sg) {
				return len(seenSigs) - 1
			}
		case <-deadline:
			t.Fatalf("no %s signal within %s", name, eventWait)
			return -1
		}
	}
}

// seenSigs are the signals waitSig has read (one test uses it at a time).
var seenSigs []*dbus.Signal
