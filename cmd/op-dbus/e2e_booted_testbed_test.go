package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// op-dbus as users run it: dist/op-dbus.service, its sandbox unchanged
// (a drop-in only switches ExecStart to enforce mode), started by systemd
// as PID 1 in a booted Debian. Under that sandbox it starts a unit and
// enables it, sets the hostname through hostname1, adds an address to the
// container's veth and verifies it with a ping probe to the peer, and
// corrects `systemctl stop` and `ip addr del` done out of band. Oracles:
// systemctl, hostnamectl and ip -j inside the container.
func TestTestbedBootedShippedUnitEnforces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := bootedEnforcing(t, ctx)
	in := bootedIn(t, ctx, b)
	waitIn := bootedWait(t, ctx, b, 45*time.Second)
	active := func() bool {
		out, _ := b.Exec(ctx, "systemctl", "is-active", "demo.service")
		return strings.TrimSpace(out) == "active"
	}
	hasAddr := func() bool {
		out, err := b.Exec(ctx, "ip", "-j", "addr", "show", "dev", "host0")
		if err != nil {
			return false
		}
		var links []struct {
			Addrs []struct {
				Local string `json:"local"`
			} `json:"addr_info"`
		}
		if json.Unmarshal([]byte(out), &links) != nil || len(links) != 1 {
			return false
		}
		return slices.ContainsFunc(links[0].Addrs, func(a struct {
			Local string `json:"local"`
		}) bool {
			return a.Local == "10.213.9.2"
		})
	}
	waitIn("demo.service started", active)
	waitIn("address on host0", hasAddr)
	if got := in("systemctl", "is-enabled", "demo.service"); got != "enabled" {
		t.Errorf("demo.service is %s, want enabled", got)
	}
	if got := in("hostnamectl", "hostname"); got != "booted-op" {
		t.Errorf("hostname %q, want booted-op", got)
	}
	if got := in("systemctl", "is-active", "op-dbus.service"); got != "active" {
		t.Fatalf("op-dbus.service is %s", got)
	}

	// Through org.opdbus1 on the booted host's system bus (root may Apply
	// under the shipped bus policy): plan, then apply by plan hash.
	out := in("busctl", "--json=short", "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Plan", "s",
		`{"version":1,"plugins":{"hostname":{"location":"set over D-Bus"}}}`)
	var plan struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Data) != 2 {
		t.Fatalf("Plan over D-Bus: %v %s", err, out)
	}
	if out := in("busctl", "--json=short", "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Apply", "s", plan.Data[0]); !strings.Contains(out, `\"success\":true`) {
		t.Fatalf("Apply over D-Bus: %s", out)
	}
	if got := in("hostnamectl", "--json=short"); !strings.Contains(got, `"set over D-Bus"`) {
		t.Errorf("hostnamectl after the D-Bus apply: %s", got)
	}

	// Through the API socket inside the booted host (reached through the
	// container's root): plan and apply by plan hash.
	api := unixClient(filepath.Join(b.Root(), "run", "op-dbus", "api.sock"))
	var p struct {
		PlanHash string `json:"plan_hash"`
	}
	apiPost(t, api, "/v1/plan", `{"version":1,"plugins":{"hostname":{"location":"set over the API"}}}`, 200, &p)
	apiPost(t, api, "/v1/apply", fmt.Sprintf(`{"plan_hash":%q}`, p.PlanHash), 200, nil)
	if got := in("hostnamectl", "--json=short"); !strings.Contains(got, `"set over the API"`) {
		t.Errorf("hostnamectl after the API apply: %s", got)
	}

	in("systemctl", "stop", "demo.service")
	waitIn("demo.service restarted by the daemon", active)
	in("ip", "addr", "del", "10.213.9.2/24", "dev", "host0")
	waitIn("address restored by the daemon", hasAddr)
	logs := journal(ctx, b)
	for _, want := range []string{"enforce: systemd: corrected", "enforce: network: corrected"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the journal lacks %q:\n%s", want, logs)
		}
	}

	out, _ = b.Exec(ctx, "systemd-analyze", "security", "--no-pager", "op-dbus.service")
	if i := strings.LastIndex(out, "Overall exposure level"); i >= 0 {
		t.Logf("systemd-analyze security op-dbus.service: %s", strings.TrimSpace(out[i:]))
		if os.Getenv("OPDBUS_SHOW_SECURITY") != "" {
			t.Log(out)
		}
	}
	start := time.Now()
	in("systemctl", "stop", "op-dbus.service")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("systemctl stop op-dbus took %s, want under 5 s", took.Round(time.Millisecond))
	}
}

// bootedEnforcing boots a Debian, installs the binary, dist/op-dbus.service
// (with a drop-in for enforce mode), the bus policy, a demo unit and the
// document, and enables the service.
func bootedEnforcing(t testing.TB, ctx context.Context) *testbed.BootedHost {
	t.Helper()
	b := testbed.NewBootedHost(t)
	host := func(argv ...string) {
		t.Helper()
		if out, err := b.HostExec(ctx, argv...); err != nil {
			t.Fatalf("%v on the bed's side: %v\n%s", argv, err, out)
		}
	}
	in := bootedIn(t, ctx, b)
	host("ip", "addr", "add", "10.213.9.1/24", "dev", "ve-booted")
	host("ip", "link", "set", "ve-booted", "up")

	dir := t.TempDir()
	doc := `{"version":1,"plugins":{
  "systemd":{"units":{"demo.service":{"active_state":"active","enabled":true}}},
  "hostname":{"static_hostname":"booted-op"},
  "network":{"interfaces":[{"name":"host0","state":"up","ipv4":{"address":[{"ip":"10.213.9.2","prefix_length":24}]}}],
             "probes":[{"ping":"10.213.9.1","timeout":"3s"}]}}}`
	files := map[string]string{
		"/etc/op-dbus/host.json":                             doc,
		"/etc/systemd/system/demo.service":                   "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
		"/etc/systemd/system/op-dbus.service.d/enforce.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/op-dbus serve --state /etc/op-dbus/host.json --mode enforce --state-dir /var/lib/op-dbus --api-socket /run/op-dbus/api.sock\n",
	}
	for path, body := range files {
		f := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.CopyIn(f, path); err != nil {
			t.Fatal(err)
		}
	}
	// The package as users install it: binary, unit, bus policy, default
	// state; its postinst enables and starts the service (report mode,
	// managing nothing) before the drop-in and the document take over.
	installDeb(t, ctx, b)
	in("systemctl", "daemon-reload")
	in("systemctl", "restart", "op-dbus.service")
	return b
}

var (
	debOnce sync.Once
	debPath string
	debErr  error
)

// buildDeb builds the .deb once for this test binary, as `make deb` does.
func buildDeb(t testing.TB) string {
	t.Helper()
	debOnce.Do(func() {
		dir, err := os.MkdirTemp("", "op-dbus-deb-")
		if err != nil {
			debErr = err
			return
		}
		root, _ := filepath.Abs(filepath.Join("..", ".."))
		bin := filepath.Join(dir, "op-dbus")
		build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/op-dbus")
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			debErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		mk := exec.Command("go", "run", ".", "-repo", root, "-binary", bin, "-o", dir)
		mk.Dir = filepath.Join(root, "tools", "mkdeb")
		if out, err := mk.CombinedOutput(); err != nil {
			debErr = fmt.Errorf("mkdeb: %v\n%s", err, out)
			return
		}
		debs, _ := filepath.Glob(filepath.Join(dir, "op-dbus_*.deb"))
		if len(debs) != 1 {
			debErr = fmt.Errorf("mkdeb wrote %v", debs)
			return
		}
		debPath = debs[0]
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debPath
}

// installDeb installs the package in the booted host with dpkg.
func installDeb(t testing.TB, ctx context.Context, b *testbed.BootedHost) {
	t.Helper()
	if err := b.CopyIn(buildDeb(t), "/root/op-dbus.deb"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Exec(ctx, "dpkg", "-i", "/root/op-dbus.deb"); err != nil {
		t.Fatalf("dpkg -i: %v\n%s\n%s", err, out, journal(ctx, b))
	}
}

// The .deb on a booted Debian: dpkg -i leaves op-dbus.service enabled and
// running in report mode on a state that manages nothing, owning
// org.opdbus1 and serving the API socket; removal stops it, purge removes
// its state directory.
func TestTestbedBootedDebInstall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := testbed.NewBootedHost(t)
	in := bootedIn(t, ctx, b)
	installDeb(t, ctx, b)
	if got := in("systemctl", "is-enabled", "op-dbus.service"); got != "enabled" {
		t.Errorf("op-dbus.service is %s after dpkg -i", got)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := b.Exec(ctx, "busctl", "get-property", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Mode")
		if err == nil {
			if strings.TrimSpace(out) != `s "report"` {
				t.Errorf("Mode %s, want report", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("org.opdbus1 not on the bus after dpkg -i: %v %s\n%s", err, out, journal(ctx, b))
		}
	}
	in("test", "-S", "/run/op-dbus/api.sock")
	in("test", "-d", "/var/lib/op-dbus")
	if out := in("op-dbus", "validate", "/etc/op-dbus/state.yaml"); !strings.Contains(out, "valid") {
		t.Errorf("validate the default state: %s", out)
	}
	in("test", "-f", "/usr/share/man/man1/op-dbus-apply.1.gz")
	in("dpkg", "-r", "op-dbus")
	if got, _ := b.Exec(ctx, "systemctl", "is-active", "op-dbus.service"); strings.TrimSpace(got) == "active" {
		t.Errorf("op-dbus.service still active after dpkg -r")
	}
	in("dpkg", "--purge", "op-dbus")
	if _, err := b.Exec(ctx, "test", "-e", "/var/lib/op-dbus"); err == nil {
		t.Errorf("/var/lib/op-dbus left after purge")
	}
}

// bootedIn runs a command in the booted host and fails the test, with the
// daemon's journal, when it fails.
func bootedIn(t testing.TB, ctx context.Context, b *testbed.BootedHost) func(argv ...string) string {
	return func(argv ...string) string {
		t.Helper()
		out, err := b.Exec(ctx, argv...)
		if err != nil {
			t.Fatalf("%v in the booted host: %v\n%s\n%s", argv, err, out, journal(ctx, b))
		}
		return strings.TrimSpace(out)
	}
}

// bootedWait polls ok until it holds, failing the test after limit.
func bootedWait(t testing.TB, ctx context.Context, b *testbed.BootedHost, limit time.Duration) func(what string, ok func() bool) {
	return func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s\n%s", what, limit, journal(ctx, b))
			}
		}
	}
}

// journal is op-dbus.service's journal inside the booted host.
func journal(ctx context.Context, b *testbed.BootedHost) string {
	out, _ := b.Exec(ctx, "journalctl", "-u", "op-dbus.service", "--no-pager", "-o", "cat", "-n", "80")
	return out
}

// BenchmarkBootedDaemon measures op-dbus under the shipped unit in the
// booted Debian: start to READY (systemd's own timestamps: ExecMainStart to
// ActiveEnter, since Type=notify is active at READY=1), RSS and CPU at rest
// over 10 s, and the time from `ip addr del` out of band to the address
// back (enforce mode), measured inside the container. Five deletions a
// run: the daemon backs off after five corrections a minute by design.
func BenchmarkBootedDaemon(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	h := bootedEnforcing(b, ctx)
	show := func(props ...string) map[string]float64 {
		out, err := h.Exec(ctx, append([]string{"systemctl", "show", "op-dbus.service"}, func() []string {
			var a []string
			for _, p := range props {
				a = append(a, "-p", p)
			}
			return a
		}()...)...)
		if err != nil {
			b.Fatalf("systemctl show: %v %s", err, out)
		}
		m := map[string]float64{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(l, "=")
			var f float64
			_, _ = fmt.Sscan(v, &f)
			m[k] = f
		}
		return m
	}
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if out, _ := h.Exec(ctx, "ip", "-br", "addr", "show", "host0"); strings.Contains(out, "10.213.9.2") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no address on host0\n%s", journal(ctx, h))
		}
	}
	var ready []float64
	for i := 0; i < 5; i++ {
		if out, err := h.Exec(ctx, "systemctl", "restart", "op-dbus.service"); err != nil {
			b.Fatalf("restart: %v %s", err, out)
		}
		m := show("ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
		ready = append(ready, (m["ActiveEnterTimestampMonotonic"]-m["ExecMainStartTimestampMonotonic"])/1000)
	}
	// At rest: CPU ticks (utime+stime, /proc/PID/stat) over 10 s and RSS.
	time.Sleep(2 * time.Second)
	ticks := func() float64 {
		out, err := h.Exec(ctx, "sh", "-c", "cut -d' ' -f14,15 /proc/$(systemctl show -p MainPID --value op-dbus.service)/stat")
		if err != nil {
			b.Fatalf("%v %s", err, out)
		}
		var u, s float64
		_, _ = fmt.Sscan(out, &u, &s)
		return u + s
	}
	t0, start := ticks(), time.Now()
	time.Sleep(10 * time.Second)
	idleCPU := (ticks() - t0) / 100 / time.Since(start).Seconds() * 100 // USER_HZ is 100
	rss, _ := h.Exec(ctx, "sh", "-c", "grep VmRSS /proc/$(systemctl show -p MainPID --value op-dbus.service)/status")
	var rssKB float64
	_, _ = fmt.Sscan(strings.TrimPrefix(strings.TrimSpace(rss), "VmRSS:"), &rssKB)
	script := `for i in 1 2 3 4 5; do
  ip addr del 10.213.9.2/24 dev host0
  t0=$(date +%s%N)
  until ip -br addr show host0 | grep -q 10.213.9.2; do :; done
  echo $(( ($(date +%s%N) - t0) / 1000 ))
  sleep 1
done`
	out, err := h.Exec(ctx, "sh", "-c", script)
	if err != nil {
		b.Fatalf("%v %s", err, out)
	}
	var lat []float64
	for _, f := range strings.Fields(out) {
		var us float64
		_, _ = fmt.Sscan(f, &us)
		lat = append(lat, us/1000)
	}
	slices.Sort(ready)
	slices.Sort(lat)
	b.ReportMetric(ready[len(ready)/2], "ready-ms-p50")
	b.ReportMetric(ready[len(ready)-1], "ready-ms-max")
	b.ReportMetric(idleCPU, "idle-cpu-%")
	b.ReportMetric(rssKB/1024, "rss-MiB")
	b.ReportMetric(lat[len(lat)/2], "readdress-ms-p50")
	b.ReportMetric(lat[len(lat)-1], "readdress-ms-max")
	b.Logf("start to READY ms %v; ip addr del to address back ms %v", ready, lat)
	for i := 0; i < b.N; i++ {
	}
}

// Under systemd: `systemctl reload` picks up a new state file; a daemon
// killed (SIGKILL) in the middle of a correction is restarted by systemd
// and its first act is to roll the interrupted transaction back and record
// that, before it corrects again; the CLI reads the same audit log.
func TestTestbedBootedReloadAndKilledMidApply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := bootedEnforcing(t, ctx)
	in := bootedIn(t, ctx, b)
	waitIn := bootedWait(t, ctx, b, 60*time.Second)
	isActive := func(u string) func() bool {
		return func() bool {
			out, _ := b.Exec(ctx, "systemctl", "is-active", u)
			return strings.TrimSpace(out) == "active"
		}
	}
	waitIn("demo.service started", isActive("demo.service"))

	// A slow unit: its start takes 4 s, long enough to kill the daemon in it.
	dir := t.TempDir()
	slow := filepath.Join(dir, "slow.service")
	if err := os.WriteFile(slow, []byte("[Unit]\nDescription=slow\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.CopyIn(slow, "/etc/systemd/system/slow.service"); err != nil {
		t.Fatal(err)
	}
	in("systemctl", "daemon-reload")
	doc := filepath.Join(dir, "host.json")
	if err := os.WriteFile(doc, []byte(`{"version":1,"plugins":{"systemd":{"units":{"demo.service":{"active_state":"active"},"slow.service":{"active_state":"active"}}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.CopyIn(doc, "/etc/op-dbus/host.json"); err != nil {
		t.Fatal(err)
	}
	// systemctl reload returns once the daemon is READY again, after the
	// reconcile the reload makes: slow.service is then started.
	in("systemctl", "reload", "op-dbus.service")
	if got := in("systemctl", "is-active", "slow.service"); got != "active" {
		t.Fatalf("slow.service %s after the reload to a document naming it", got)
	}
	// Stopped behind its back, slow.service is started again by the
	// daemon: a correction that takes 4 s. Kill the daemon in it.
	in("systemctl", "stop", "slow.service")
	waitIn("the correction of slow.service under way", func() bool {
		out, _ := b.Exec(ctx, "systemctl", "is-active", "slow.service")
		return strings.TrimSpace(out) == "activating"
	})
	pid := in("systemctl", "show", "-p", "MainPID", "--value", "op-dbus.service")
	in("kill", "-9", pid)
	// systemd restarts it (Restart=on-failure, RestartSec=5s); the new
	// daemon rolls the interrupted correction back, then corrects again.
	waitIn("op-dbus restarted", func() bool {
		out, _ := b.Exec(ctx, "systemctl", "show", "-p", "MainPID", "--value", "op-dbus.service")
		p := strings.TrimSpace(out)
		return p != pid && p != "0" && isActive("op-dbus.service")()
	})
	waitIn("slow.service active after the restart", isActive("slow.service"))
	out := in("/usr/bin/op-dbus", "--state-dir=/var/lib/op-dbus", "audit", "log", "-o", "json")
	var es []struct {
		Kind, Source, Result, Message string
	}
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("audit log: %v\n%s", err, out)
	}
	var kinds []string
	recovered := false
	for _, e := range es {
		kinds = append(kinds, e.Kind+"/"+e.Source+"/"+e.Result)
		if e.Kind == "recovery" && e.Result == "recovered" && strings.Contains(e.Message, "started by daemon") {
			recovered = true
		}
	}
	if !recovered {
		t.Errorf("no recovery of the daemon's interrupted correction in the audit log: %v\n%s", kinds, journal(ctx, b))
	}
	if !strings.Contains(journal(ctx, b), "reloaded /etc/op-dbus/host.json") {
		t.Errorf("the reload is not in the journal:\n%s", journal(ctx, b))
	}
	if out := in("/usr/bin/op-dbus", "--state-dir=/var/lib/op-dbus", "audit", "verify"); !strings.Contains(out, "OK") {
		t.Errorf("audit verify: %s", out)
	}
}
