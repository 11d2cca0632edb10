package testbed_test

import (
	"bufio"
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

// TestBootedHost boots Debian with systemd as PID 1 in systemd-nspawn and
// checks it is a real booted system, isolated from the host, and that
// teardown leaves nothing behind.
func TestBootedHost(t *testing.T) {
	testbed.Program(t, "mmdebstrap", "mmdebstrap")
	testbed.Program(t, "systemd-nspawn", "systemd-container")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	hostName, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}

	// Build the cached root here (if missing) so its time is measured apart
	// from the boot.
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Minute)
	logf, err := os.CreateTemp("", "bootwt-mmdebstrap-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(logf.Name()) })
	root, built, err := testbed.EnsureBootedRoot(bctx, logf)
	bcancel()
	logf.Close()
	if err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("build root: %v\n%s", err, b)
	}
	if built > 0 {
		t.Logf("cold build of %s with mmdebstrap: %v", root, built.Round(100*time.Millisecond))
	} else {
		t.Logf("root %s cached", root)
	}

	var b *testbed.BootedHost
	var initPID, nspawnPID, leader int
	t.Run("booted", func(t *testing.T) {
		start := time.Now()
		b = testbed.NewBootedHost(t)
		t.Logf("boot to is-system-running: %v", time.Since(start).Round(10*time.Millisecond))
		initPID, nspawnPID, leader = b.InitPID(), b.NSpawnPID(), b.LeaderPID()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()

		out, err := b.Exec(ctx, "systemctl", "is-system-running")
		if st := strings.TrimSpace(out); st != "running" && st != "degraded" {
			failed, _ := b.Exec(ctx, "systemctl", "--failed", "--no-legend")
			t.Fatalf("is-system-running = %q (%v); failed units:\n%s", st, err, failed)
		} else {
			t.Logf("is-system-running: %s", st)
		}
		if out, _ := b.Exec(ctx, "cat", "/proc/1/comm"); strings.TrimSpace(out) != "systemd" {
			t.Errorf("PID 1 inside is %q, want systemd", out)
		}

		// hostnamed through the container's system bus.
		if out, err := b.Exec(ctx, "busctl", "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
			"org.freedesktop.hostname1", "SetStaticHostname", "sb", "booted-bed-test", "false"); err != nil {
			t.Fatalf("SetStaticHostname: %v\n%s", err, out)
		}
		if out, err := b.Exec(ctx, "hostnamectl", "hostname"); err != nil || strings.TrimSpace(out) != "booted-bed-test" {
			t.Errorf("hostnamectl hostname = %q (%v), want booted-bed-test", out, err)
		}
		if out, _ := b.Exec(ctx, "cat", "/etc/hostname"); strings.TrimSpace(out) != "booted-bed-test" {
			t.Errorf("/etc/hostname inside = %q", out)
		}
		if h, _ := os.Hostname(); h != hostName {
			t.Errorf("host's hostname changed: %q -> %q", hostName, h)
		}
		if hb, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); strings.Contains(string(hb), "booted-bed-test") {
			t.Errorf("cached root's /etc/hostname changed: %q", hb)
		}
		for _, svc := range []string{"org.freedesktop.timedate1", "org.freedesktop.locale1"} {
			if out, err := b.Exec(ctx, "busctl", "introspect", svc, "/org/freedesktop/"+strings.TrimPrefix(svc, "org.freedesktop.")); err != nil {
				t.Errorf("%s: %v\n%s", svc, err, out)
			}
		}

		// A unit copied in starts.
		unit := filepath.Join(t.TempDir(), "bootwt-hello.service")
		if err := os.WriteFile(unit, []byte("[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh -c 'echo hello > /run/bootwt-hello'\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.CopyIn(unit, "/etc/systemd/system/bootwt-hello.service"); err != nil {
			t.Fatal(err)
		}
		if out, err := b.Exec(ctx, "systemctl", "start", "bootwt-hello.service"); err != nil {
			t.Fatalf("systemctl start: %v\n%s", err, out)
		}
		if out, _ := b.Exec(ctx, "systemctl", "is-active", "bootwt-hello.service"); strings.TrimSpace(out) != "active" {
			t.Errorf("is-active = %q, want active", out)
		}
		if out, _ := b.Exec(ctx, "cat", "/run/bootwt-hello"); strings.TrimSpace(out) != "hello" {
			t.Errorf("unit's output = %q", out)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/bootwt-hello.service")); err == nil {
			t.Error("unit copied in landed in the cached root")
		}

		// Network: host0 inside, ve-booted on the bed's side; they talk.
		out, err = b.Exec(ctx, "ip", "-j", "addr")
		if err != nil {
			t.Fatal(err)
		}
		var links []struct {
			IfName string `json:"ifname"`
		}
		if err := json.Unmarshal([]byte(out), &links); err != nil {
			t.Fatalf("ip -j addr: %v\n%s", err, out)
		}
		var names []string
		for _, l := range links {
			names = append(names, l.IfName)
		}
		if !contains(names, "host0") {
			t.Fatalf("links inside %v, want host0", names)
		}
		if _, err := os.Stat("/sys/class/net/ve-booted"); err == nil {
			t.Error("ve-booted is in the host's network namespace")
		}
		steps := [][]string{
			{"host", "ip", "addr", "add", "10.213.7.1/24", "dev", "ve-booted"},
			{"host", "ip", "link", "set", "ve-booted", "up"},
			{"in", "ip", "addr", "add", "10.213.7.2/24", "dev", "host0"},
			{"in", "ip", "link", "set", "host0", "up"},
		}
		for _, s := range steps {
			run := b.Exec
			if s[0] == "host" {
				run = b.HostExec
			}
			if out, err := run(ctx, s[1:]...); err != nil {
				t.Fatalf("%v: %v\n%s", s, err, out)
			}
		}
		if out, err := b.Exec(ctx, "ping", "-c", "1", "-W", "5", "10.213.7.1"); err != nil {
			t.Errorf("ping from the container to ve-booted: %v\n%s", err, out)
		}

		start = time.Now()
		if err := b.Close(); err != nil { // again in the cleanup: idempotent
			t.Errorf("Close: %v", err)
		}
		t.Logf("Close (halt): %v", time.Since(start).Round(10*time.Millisecond))
		// The container was shut down, not killed: systemd inside got to
		// the end of its shutdown.
		nlog, _ := os.ReadFile(filepath.Join(b.Dir, "nspawn.log"))
		if !strings.Contains(string(nlog), "Halting system.") && !strings.Contains(string(nlog), "Powering off.") {
			t.Errorf("no clean shutdown in nspawn.log:\n%s", nlog)
		} else {
			lines := strings.Split(strings.TrimSpace(string(nlog)), "\n")
			t.Logf("nspawn.log ends:\n%s", strings.Join(lines[max(0, len(lines)-4):], "\n"))
		}
	})
	if b == nil || leader == 0 {
		return
	}

	// Teardown (NewBootedHost's cleanup ran at the end of the subtest).
	start := time.Now()
	for _, pid := range []int{initPID, nspawnPID, leader} {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d still alive after Close", pid)
		}
	}
	t.Logf("checked teardown %v after Close", time.Since(start).Round(time.Millisecond))
	if pids := nspawnPIDs(); len(pids) > 0 {
		// Other tests may run beds too; only ours must be gone.
		t.Logf("systemd-nspawn processes on the host (not ours): %v", pids)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(mi)))
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, root) || strings.Contains(l, "tb-boot-") || strings.Contains(l, "/nspawn") {
			t.Errorf("mount left after Close: %s", l)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func nspawnPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if c, _ := os.ReadFile("/proc/" + e.Name() + "/comm"); strings.TrimSpace(string(c)) == "systemd-nspawn" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestBootedHostTwo runs two booted hosts at once: they share the cached
// root read-only, and each has its own overlay, hostname and network.
func TestBootedHostTwo(t *testing.T) {
	testbed.Program(t, "mmdebstrap", "mmdebstrap")
	testbed.Program(t, "systemd-nspawn", "systemd-container")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	a := testbed.NewBootedHost(t)
	b := testbed.NewBootedHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := a.Exec(ctx, "hostnamectl", "set-hostname", "bed-a"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, _ := a.Exec(ctx, "hostname"); strings.TrimSpace(out) != "bed-a" {
		t.Errorf("a's hostname = %q", out)
	}
	if out, _ := b.Exec(ctx, "hostname"); strings.TrimSpace(out) == "bed-a" {
		t.Errorf("b's hostname changed with a's")
	}
	if out, err := a.Exec(ctx, "touch", "/etc/only-in-a"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := b.Exec(ctx, "test", "-e", "/etc/only-in-a"); err == nil {
		t.Error("a file written in a shows in b")
	}
}
