package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// nmServeDoc is a bridge profile with a manual address, applied with
// `op-dbus apply --yes` before the daemon starts watching it.
const nmServeDoc = `{"version": 1, "plugins": {"networkmanager": {"connections": {
	"br7": {"type": "bridge", "interface_name": "br7", "active": true, "bridge": {"stp": false},
		"ipv4": {"method": "manual", "addresses": ["10.97.0.1/24"]}, "ipv6": {"method": "disabled"}}}}}}`

// nmServeSetup starts a NetworkManager bed, applies nmServeDoc and
// returns the bed, the environment that points op-dbus at the bed's bus,
// the document and the state dir.
func nmServeSetup(t *testing.T) (nm *testbed.NetworkManager, env []string, doc, sd string) {
	t.Helper()
	nm, env = nmBed(t)
	dir := t.TempDir()
	sd = dir + "/state"
	doc = writeFile(t, dir, "net.json", nmServeDoc)
	r := run(t, env, "", "--state-dir="+sd, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply")
	if got := nmAddrs(t, nm, "br7", "10.97.0.1/24"); !slices.Equal(got, []string{"10.97.0.1/24"}) {
		t.Fatalf("ip: br7 has %v after apply", got)
	}
	return nm, env, doc, sd
}

func nmcliRun(t *testing.T, nm *testbed.NetworkManager, args ...string) {
	t.Helper()
	if out, err := nm.Nmcli(context.Background(), args...); err != nil {
		t.Fatalf("nmcli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// byEvent accepts the daemon's networkmanager events caused by a signal
// (the plugin's Watch), not by the start-up check or the reconcile timer.
func byEvent(e daemonEvent) bool {
	return e.Plugin == "networkmanager" && strings.Contains(e.raw, `"trigger":"event"`)
}

// `op-dbus serve` in report mode sees out-of-band nmcli changes through the
// plugin's Watch (the reconcile timer is an hour), and still sees them
// after NetworkManager restarts.
func TestTestbedServeNetworkManagerDriftAcrossRestart(t *testing.T) {
	nm, env, doc, sd := nmServeSetup(t)
	s := startServe(t, env, "--state-dir="+sd, "serve", "--state", doc, "--mode", "report", "--interval=1h")

	nmcliRun(t, nm, "connection", "modify", "br7", "ipv4.addresses", "10.97.5.1/24")
	ev := s.wait(t, "drift", byEvent)
	if ev.Items != 1 || !slices.ContainsFunc(ev.Changes, func(c string) bool {
		return strings.Contains(c, `["br7"].ipv4.addresses`) && strings.Contains(c, "10.97.0.1/24") && strings.Contains(c, "10.97.5.1/24")
	}) {
		t.Errorf("drift event does not name br7's ipv4.addresses with both values: %s", ev.raw)
	}
	if got := nmOracle(t, nm, "ipv4.addresses", "br7"); got != "10.97.5.1/24" {
		t.Errorf("report mode changed the profile: ipv4.addresses %q", got)
	}

	// Put it back by hand: the daemon sees that too.
	nmcliRun(t, nm, "connection", "modify", "br7", "ipv4.addresses", "10.97.0.1/24")
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "networkmanager" })

	if err := nm.RestartNetworkManager(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The new NetworkManager assumes br7 (it may be "activating" for a
	// moment, which the daemon may report); wait until it is active.
	var st string
	for deadline := time.Now().Add(eventWait); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st = nmOracle(t, nm, "GENERAL.STATE", "br7"); st == "activated" {
			break
		}
	}
	if st != "activated" {
		t.Fatalf("br7 is %q after NetworkManager restarted", st)
	}
	nmcliRun(t, nm, "connection", "modify", "br7", "bridge.stp", "yes")
	ev = s.wait(t, "drift", func(e daemonEvent) bool {
		return byEvent(e) && slices.ContainsFunc(e.Changes, func(c string) bool { return strings.Contains(c, `["br7"].bridge.stp`) })
	})
	if len(ev.Changes) != 1 || !strings.Contains(ev.Changes[0], `["br7"].bridge.stp desired false, current true`) {
		t.Errorf("drift after the restart is not exactly bridge.stp desired false, current true: %s", ev.raw)
	}
	if !s.stderrHas(`["br7"].bridge.stp desired false, current true`) {
		t.Errorf("drift after the restart not logged:\n%s", s.Stderr())
	}
	select {
	case <-s.exited:
		t.Fatalf("daemon exited:\n%s", s.Stderr())
	default:
	}
}

// In enforce mode an out-of-band address change is corrected: nmcli and ip
// show the declared address again.
func TestTestbedServeNetworkManagerEnforce(t *testing.T) {
	nm, env, doc, sd := nmServeSetup(t)
	s := startServe(t, env, "--state-dir="+sd, "serve", "--state", doc, "--mode", "enforce", "--interval=1h")

	nmcliRun(t, nm, "connection", "modify", "br7", "ipv4.addresses", "10.97.6.1/24")
	nmcliRun(t, nm, "connection", "up", "br7")
	s.wait(t, "drift", byEvent)
	// The daemon may correct the modify before nmcli's own activation
	// reaches NetworkManager, which then replaces the daemon's ("new
	// activation"): that correction fails and is rolled back, and the
	// daemon corrects again. The result must be a successful correction.
	s.wait(t, "correction", func(e daemonEvent) bool {
		if e.Plugin == "networkmanager" && e.Result != "success" {
			t.Logf("a correction raced nmcli's activation: %s", e.raw)
		}
		return e.Plugin == "networkmanager" && e.Result == "success"
	})
	if got := nmOracle(t, nm, "ipv4.addresses", "br7"); got != "10.97.0.1/24" {
		t.Errorf("nmcli: br7 ipv4.addresses %q after the correction, want 10.97.0.1/24", got)
	}
	if got := nmAddrs(t, nm, "br7", "10.97.0.1/24"); !slices.Equal(got, []string{"10.97.0.1/24"}) {
		t.Errorf("ip: br7 has %v after the correction, want [10.97.0.1/24]", got)
	}
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "networkmanager" })
	kinds := auditKinds(t, env, sd)
	if !serveHas(kinds, "drift/daemon/drift") || !serveHas(kinds, "correction/daemon/success") {
		t.Errorf("audit log lacks the drift or the correction: %v", kinds)
	}
}
