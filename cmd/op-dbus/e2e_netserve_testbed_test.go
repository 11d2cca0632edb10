package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// The daemon's plugin watches (plugin.Watcher) end to end: `op-dbus serve`
// with --interval=1h, so that the periodic reconcile cannot be what sees
// an out-of-band change; only the plugin's own change source can.

// startServeIn runs `op-dbus -o json serve ...` inside the bed (so the
// network plugin's netlink sockets are the bed's) and waits for "ready".
// The bed's nsenter forks the binary and does not pass signals on, so
// stop signals the binary itself, by its PID.
func startServeIn(t *testing.T, bed *testbed.NetNS, args ...string) (*served, func()) {
	t.Helper()
	args = append(args, "--dbus=none") // never the host's system bus
	cmd := bed.Command(context.Background(), nil, append([]string{binary, "-o", "json"}, args...)...)
	s := startServed(t, cmd)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if pid := childOf(cmd.Process.Pid); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			t.Errorf("op-dbus serve in the bed did not stop within 15s of SIGTERM")
			_ = cmd.Process.Kill() // nsenter; the bed's close kills the rest
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", s.Stderr())
		}
	}
	t.Cleanup(stop)
	s.wait(t, "ready", func(daemonEvent) bool { return true })
	return s, stop
}

// childOf is the (host) PID of the only child of pid, 0 if none.
func childOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// linkMTU is the oracle: the link's MTU as `ip -j link show` in the bed
// reports it.
func linkMTU(t *testing.T, bed *testbed.NetNS, name string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := bed.Exec(ctx, "ip", "-j", "link", "show", "dev", name)
	if err != nil {
		t.Fatalf("ip -j link show dev %s: %v", name, err)
	}
	var links []struct {
		MTU int `json:"mtu"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show dev %s: %v\n%s", name, err, out)
	}
	return links[0].MTU
}

func hasChange(ev daemonEvent, sub string) bool {
	for _, c := range ev.Changes {
		if strings.Contains(c, sub) {
			return true
		}
	}
	return false
}

// An out-of-band MTU change on a bridge the document declares is seen by
// the network plugin's netlink watch: reported (and left alone) in report
// mode, corrected in enforce mode, with `ip -j link` as the oracle.
func TestTestbedServeNetworkWatchDriftAndEnforce(t *testing.T) {
	bed := testbed.NewNetNS(t)
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	doc := netDoc(t, dir, "net.json", `{"interfaces":[
		{"name":"br0","type":"bridge","state":"up","mtu":1450,
		 "ipv4":{"address":[{"ip":"10.44.0.1","prefix_length":24}]}}]}`)
	wantCode(t, netRun(t, bed, sd, "apply", "--yes", doc), 0, "apply")
	if got := linkMTU(t, bed, "br0"); got != 1450 {
		t.Fatalf("br0 mtu %d after apply, want 1450", got)
	}

	// Report: the drift is named, the host is left as it is.
	s, stop := startServeIn(t, bed, "--state-dir="+sd, "serve", "--state", doc, "--mode", "report", "--interval", "1h")
	netSh(t, bed, "ip link set br0 mtu 1400")
	ev := s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "network" })
	if ev.Items != 1 || !hasChange(ev, `interfaces["br0"].mtu desired 1450, current 1400`) {
		t.Errorf("drift event does not name br0's mtu: %s", ev.raw)
	}
	if got := linkMTU(t, bed, "br0"); got != 1400 {
		t.Errorf("report mode changed br0's mtu to %d", got)
	}
	// A second, different drift (an address removed) is a new event.
	netSh(t, bed, "ip addr del 10.44.0.1/24 dev br0")
	ev = s.wait(t, "drift", func(e daemonEvent) bool { return hasChange(e, `interfaces["br0"].ipv4.address`) })
	if !hasChange(ev, `interfaces["br0"].mtu desired 1450, current 1400`) {
		t.Errorf("second drift event lost the mtu: %s", ev.raw)
	}
	stop()

	// Enforce: the start corrects what drifted meanwhile; an MTU change
	// after that is seen and corrected too.
	s, _ = startServeIn(t, bed, "--state-dir="+sd, "serve", "--state", doc, "--mode", "enforce", "--interval", "1h")
	if got := linkMTU(t, bed, "br0"); got != 1450 {
		t.Fatalf("enforce start left br0's mtu at %d, want 1450", got)
	}
	netSh(t, bed, "ip link set br0 mtu 1300")
	ev = s.wait(t, "drift", func(e daemonEvent) bool {
		return e.Plugin == "network" && hasChange(e, `interfaces["br0"].mtu desired 1450, current 1300`)
	})
	ev = s.wait(t, "correction", func(e daemonEvent) bool { return e.Plugin == "network" })
	if ev.Result != "success" {
		t.Fatalf("correction: %s", ev.raw)
	}
	if got := linkMTU(t, bed, "br0"); got != 1450 {
		t.Errorf("br0 mtu %d after the correction, want 1450", got)
	}
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "network" })
}

// The ovs plugin's OVSDB monitor survives ovsdb-server being killed and
// restarted under the daemon: a change made after the restart is still
// reported, without the periodic reconcile.
func TestTestbedServeOVSWatchSurvivesDBRestart(t *testing.T) {
	o := testbed.NewOVS(t, testbed.OVSDBOnly())
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	g := []string{"--ovsdb", o.DBAddress, "--state-dir=" + sd}
	doc := writeFile(t, dir, "ovs.json", `{"version": 1, "plugins": {"ovs": {"bridges": {
		"br0": {"fail_mode": "secure", "external_ids": {"role": "uplink"}, "ports": {"p1": {"tag": 10}}}}}}}`)
	wantCode(t, run(t, nil, "", append(g, "apply", "--yes", doc)...), 0, "apply")

	s := startServe(t, nil, append(g, "serve", "--state", doc, "--mode", "report", "--interval", "1h")...)
	ovsctl(t, o, "set", "Bridge", "br0", "external_ids:role=downlink")
	ev := s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "ovs" })
	if !hasChange(ev, `bridges["br0"].external_ids`) || !strings.Contains(ev.raw, "downlink") {
		t.Errorf("drift event does not name br0's external_ids: %s", ev.raw)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := o.RestartDB(ctx); err != nil {
		t.Fatalf("restart ovsdb-server: %v\n%s", err, o.Log("ovsdb-server"))
	}
	ovsctl(t, o, "set", "Bridge", "br0", "fail_mode=standalone")
	ev = s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "ovs" && hasChange(e, `bridges["br0"].fail_mode`) })
	if !strings.Contains(ev.raw, "standalone") || !hasChange(ev, `bridges["br0"].external_ids`) {
		t.Errorf("drift after the restart: %s", ev.raw)
	}

	// Once more, to show the restarted monitor keeps working (not just a
	// one-off re-read after reconnecting).
	ovsctl(t, o, "set", "Port", "p1", "tag=11")
	ev = s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "ovs" && hasChange(e, `ports["p1"].tag`) })
	if !hasChange(ev, `ports["p1"].tag desired 10, current 11`) {
		t.Errorf("drift of p1's tag: %s", ev.raw)
	}
	if got := ovsctl(t, o, "get", "Port", "p1", "tag"); got != "11" {
		t.Errorf("report mode changed p1's tag: %q", got)
	}
}
