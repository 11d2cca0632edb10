package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// eventWait bounds every wait for a daemon event. It is generous: the
// tests check that an event comes, never how fast (the benchmark measures).
const eventWait = 60 * time.Second

// daemonEvent is one line of `serve -o json`.
type daemonEvent struct {
	Event     string   `json:"event"`
	Plugin    string   `json:"plugin"`
	Items     int      `json:"items"`
	Changes   []string `json:"changes"`
	LatencyMS float64  `json:"latency_ms"`
	OK        bool     `json:"ok"`
	Result    string   `json:"result"`
	Error     string   `json:"error"`
	raw       string
}

// served is a running `op-dbus serve`.
type served struct {
	cmd    *exec.Cmd
	events chan daemonEvent
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
}

func (s *served) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// stderrHas waits (bounded) for sub on the daemon's stderr, which is
// copied separately from stdout and may lag behind an event.
func (s *served) stderrHas(sub string) bool {
	deadline := time.Now().Add(eventWait)
	for !strings.Contains(s.Stderr(), sub) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

type lockedWriter struct{ s *served }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.stderr.Write(p)
}

// startServed starts cmd (an `op-dbus -o json serve`) and feeds its JSON
// events to the returned served's channel.
func startServed(t testing.TB, cmd *exec.Cmd) *served {
	t.Helper()
	s := &served{cmd: cmd, events: make(chan daemonEvent, 1024), exited: make(chan struct{})}
	cmd.Stderr = lockedWriter{s}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev daemonEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				ev.raw = sc.Text()
				s.events <- ev
			}
		}
		_ = cmd.Wait()
		close(s.exited)
		close(s.events)
	}()
	return s
}

// startServe runs op-dbus serve -o json and waits for its "ready" event.
func startServe(t testing.TB, env []string, args ...string) *served {
	t.Helper()
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--dbus") }) {
		args = append(args, "--dbus=none") // never the host's system bus
	}
	cmd := exec.Command(binary, append([]string{"-o", "json"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	s := startServed(t, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", s.Stderr())
		}
	})
	s.wait(t, "ready", func(daemonEvent) bool { return true })
	return s
}

// wait returns the next event named name that satisfies ok, skipping others.
func (s *served) wait(t testing.TB, name string, ok func(daemonEvent) bool) daemonEvent {
	t.Helper()
	deadline := time.After(eventWait)
	for {
		select {
		case ev, open := <-s.events:
			if !open {
				t.Fatalf("op-dbus serve exited while waiting for %q:\n%s", name, s.Stderr())
			}
			if ev.Event == name && ok(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %q event from op-dbus serve within %s:\n%s", name, eventWait, s.Stderr())
		}
	}
}

func serveBed(t testing.TB, unit string) (*testbed.UserManager, []string) {
	m, env := userBedTB(t)
	content := strings.ReplaceAll(goodUnit, "%s", unit)
	if err := os.WriteFile(filepath.Join(m.DataUnitDir, unit), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if out, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v %s", err, out)
	}
	if out, err := m.Systemctl(ctx, "start", unit); err != nil {
		t.Fatalf("start %s: %v %s", unit, err, out)
	}
	return m, env
}

func auditKinds(t *testing.T, env []string, stateDir string) []string {
	t.Helper()
	r := run(t, env, "", "--state-dir="+stateDir, "audit", "log", "-o", "json")
	wantCode(t, r, 0, "audit log")
	var es []struct {
		Kind   string `json:"kind"`
		Source string `json:"source"`
		Result string `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
		t.Fatalf("audit log -o json: %v\n%s", err, r.stdout)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Kind+"/"+e.Source+"/"+e.Result)
	}
	return out
}

func TestTestbedServeReportDriftAndReload(t *testing.T) {
	m, env := serveBed(t, "watch-a.service")
	dir := t.TempDir()
	sd := dir + "/state"
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"watch-a.service":{"active_state":"active"}}}}}`)
	sock := filepath.Join(dir, "api.sock")
	s := startServe(t, env, "--user", "--state-dir="+sd, "serve", "--state", doc, "--mode", "report", "--api-socket", sock)

	if o, err := m.Systemctl(context.Background(), "stop", "watch-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	ev := s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if ev.Items != 1 || len(ev.Changes) != 1 || !strings.Contains(ev.Changes[0], `units["watch-a.service"].active_state desired "active", current "inactive`) {
		t.Errorf("drift event does not name the drifted field: %s", ev.raw)
	}
	if !s.stderrHas(`drift: systemd: units["watch-a.service"].active_state desired "active", current "inactive`) {
		t.Errorf("drift not logged on stderr:\n%s", s.Stderr())
	}
	if got := oracle2(m, "is-active", "watch-a.service"); got != "inactive" {
		t.Errorf("report mode changed the host: watch-a is %q", got)
	}
	if st := apiDrift(t, sock); st.Mode != "report" || st.Items["systemd"] != 1 {
		t.Errorf("GET /v1/drift on the API socket: %+v", st)
	}
	if kinds := auditKinds(t, env, sd); !serveHas(kinds, "drift/daemon/drift") {
		t.Errorf("audit log has no drift entry from the daemon: %v", kinds)
	}

	// An invalid document is refused; the daemon keeps the old one.
	writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"watch-a.service":{"active_stat":"active"}}}}}`)
	_ = s.cmd.Process.Signal(syscall.SIGHUP)
	ev = s.wait(t, "reload", func(daemonEvent) bool { return true })
	if ev.OK || !strings.Contains(ev.Error, "active_stat") {
		t.Errorf("invalid document not refused with its error: %s", ev.raw)
	}
	if !s.stderrHas("kept the old state") {
		t.Errorf("daemon does not say it kept the old state:\n%s", s.Stderr())
	}
	select {
	case <-s.exited:
		t.Fatalf("daemon exited after an invalid reload:\n%s", s.Stderr())
	default:
	}

	// A valid one is taken: the unit is now meant to be stopped, so the
	// host is in sync again.
	writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"watch-a.service":{"active_state":"inactive"}}}}}`)
	_ = s.cmd.Process.Signal(syscall.SIGHUP)
	s.wait(t, "reload", func(e daemonEvent) bool { return e.OK })
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "systemd" })

	// And the new document is what drift is measured against.
	if o, err := m.Systemctl(context.Background(), "start", "watch-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	ev = s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if len(ev.Changes) != 1 || !strings.Contains(ev.Changes[0], `desired "inactive", current "active"`) {
		t.Errorf("drift after reload: %s", ev.raw)
	}
}

func TestTestbedServeEnforceCorrects(t *testing.T) {
	m, env := serveBed(t, "keep-a.service")
	dir := t.TempDir()
	sd := dir + "/state"
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"keep-a.service":{"active_state":"active"}}}}}`)
	s := startServe(t, env, "--user", "--state-dir="+sd, "serve", "--state", doc, "--mode", "enforce")

	if o, err := m.Systemctl(context.Background(), "stop", "keep-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	ev := s.wait(t, "correction", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if ev.Result != "success" {
		t.Fatalf("correction failed: %s", ev.raw)
	}
	if got := oracle2(m, "is-active", "keep-a.service"); got != "active" {
		t.Errorf("systemctl --user is-active keep-a.service = %q after the correction", got)
	}
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	kinds := auditKinds(t, env, sd)
	if !serveHas(kinds, "drift/daemon/drift") || !serveHas(kinds, "correction/daemon/success") {
		t.Errorf("audit log lacks the drift or the correction: %v", kinds)
	}
}

// apiDrift asks the daemon's API for its drift status.
func apiDrift(t *testing.T, sock string) (st struct {
	Mode  string         `json:"mode"`
	Items map[string]int `json:"items"`
}) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Get("http://op-dbus/v1/drift")
	if err != nil {
		t.Fatalf("GET /v1/drift: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(b, &st) != nil {
		t.Fatalf("GET /v1/drift: %s %s", resp.Status, b)
	}
	return st
}

func oracle2(m *testbed.UserManager, verb, unit string) string {
	out, _ := m.Systemctl(context.Background(), verb, unit)
	return strings.TrimSpace(out)
}

func serveHas(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// BenchmarkDriftLatency measures an out-of-band `systemctl --user stop` to
// the daemon's drift event: wall time from just before systemctl runs to
// the event line (an upper bound: it includes systemctl itself), and the
// daemon's own latency_ms (first signal → drift event).
func BenchmarkDriftLatency(b *testing.B) {
	m, env := serveBed(b, "bench-a.service")
	dir := b.TempDir()
	doc := filepath.Join(dir, "host.json")
	if err := os.WriteFile(doc, []byte(`{"version":1,"plugins":{"systemd":{"units":{"bench-a.service":{"active_state":"active"}}}}}`), 0o644); err != nil {
		b.Fatal(err)
	}
	s := startServe(b, env, "--user", "--state-dir="+dir+"/state", "serve", "--state", doc, "--mode", "report")
	ctx := context.Background()
	var wall, own []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 20; j++ {
			b.StopTimer()
			if o, err := m.Systemctl(ctx, "start", "bench-a.service"); err != nil {
				b.Fatalf("%v %s", err, o)
			}
			if len(wall) > 0 {
				s.wait(b, "in_sync", func(e daemonEvent) bool { return e.Plugin == "systemd" })
			}
			b.StartTimer()
			t0 := time.Now()
			if o, err := m.Systemctl(ctx, "stop", "bench-a.service"); err != nil {
				b.Fatalf("%v %s", err, o)
			}
			ev := s.wait(b, "drift", func(e daemonEvent) bool { return e.Plugin == "systemd" })
			wall = append(wall, float64(time.Since(t0).Microseconds())/1000)
			own = append(own, ev.LatencyMS)
		}
	}
	b.StopTimer()
	b.ReportMetric(servePercentile(wall, 50), "p50-ms")
	b.ReportMetric(servePercentile(wall, 95), "p95-ms")
	b.ReportMetric(servePercentile(own, 50), "daemon-p50-ms")
	b.ReportMetric(servePercentile(own, 95), "daemon-p95-ms")
}

func servePercentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// BenchmarkDaemonIdle measures `op-dbus serve` at rest: CPU time it uses
// over 10 s with nothing changing (from /proc/PID/stat, in per cent of one
// core) and its resident memory, watching a unit, hostname1 and the API.
func BenchmarkDaemonIdle(b *testing.B) {
	_, env := serveBed(b, "idle-a.service")
	dir := b.TempDir()
	doc := filepath.Join(dir, "host.json")
	if err := os.WriteFile(doc, []byte(`{"version":1,"plugins":{"systemd":{"units":{"idle-a.service":{"active_state":"active"}}}}}`), 0o644); err != nil {
		b.Fatal(err)
	}
	s := startServe(b, env, "--user", "--state-dir="+dir+"/state", "serve", "--state", doc, "--api-socket", filepath.Join(dir, "api.sock"))
	pid := s.cmd.Process.Pid
	ticks := func() float64 {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command name (which may hold spaces): utime is
		// the 14th field of the line, stime the 15th.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		u, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		return u + st
	}
	time.Sleep(time.Second) // past start-up and the first reconcile
	var cpu, rss []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0, c0 := time.Now(), ticks()
		time.Sleep(10 * time.Second)
		busy := (ticks() - c0) / 100 // clock ticks (USER_HZ 100) to seconds
		cpu = append(cpu, 100*busy/time.Since(t0).Seconds())
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, l := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				rss = append(rss, kb/1024)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(servePercentile(cpu, 50), "cpu-%")
	b.ReportMetric(servePercentile(rss, 50), "rss-MB")
}
