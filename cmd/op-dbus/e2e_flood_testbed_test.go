package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// rssKiB reads VmRSS of pid.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// 10,000 real PropertiesChanged signals from hostnamed (one SetLocation
// each, pipelined) while `op-dbus serve` watches. The last call puts the
// desired value back: the daemon must report in_sync after having
// reported drift (it saw the final state), count every signal
// (op_dbus_events_total), and its memory must stay flat.
func TestTestbedServeSignalFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test: 10,000 D-Bus calls")
	}
	b, env := identityBed(t)
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{"location":"home"}}}`)
	ctx := context.Background()
	conn, err := dbus.Connect(b.BusAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object("org.freedesktop.hostname1", "/org/freedesktop/hostname1")
	set := func(v string) *dbus.Call {
		return obj.GoWithContext(ctx, "org.freedesktop.hostname1.SetLocation", 0, make(chan *dbus.Call, 1), v, false)
	}
	if c := <-set("home").Done; c.Err != nil {
		t.Fatal(c.Err)
	}
	sock := filepath.Join(dir, "api.sock")
	s := startServe(t, env, "--state-dir="+filepath.Join(dir, "state"), "serve", "--state", doc, "--debounce=20ms", "--api-socket", sock)
	time.Sleep(300 * time.Millisecond) // the first reconcile (in sync: no event)
	pid := s.cmd.Process.Pid
	before := rssKiB(t, pid)
	eventsBefore := eventsTotal(t, sock, "hostname")

	const n = 10000
	const window = 64 // calls in flight on the one connection (order is kept)
	inflight := make(chan *dbus.Call, window)
	errc := make(chan error, 1)
	go func() {
		for c := range inflight {
			<-c.Done
			if c.Err != nil {
				select {
				case errc <- c.Err:
				default:
				}
			}
		}
		close(errc)
	}()
	start := time.Now()
	var samples []int // RSS at every 2,500 calls sent
	for i := 0; i < n-1; i++ {
		if i%2500 == 0 {
			samples = append(samples, rssKiB(t, pid))
		}
		inflight <- set(fmt.Sprintf("flood-%d", i))
	}
	inflight <- set("home")
	close(inflight)
	if err := <-errc; err != nil {
		t.Fatalf("SetLocation: %v", err)
	}
	sent := time.Since(start)
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "home"` {
		t.Fatalf("hostnamed's Location after the flood is %s, want home", got)
	}
	s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "hostname" })
	s.wait(t, "in_sync", func(e daemonEvent) bool { return e.Plugin == "hostname" })
	if st := apiDrift(t, sock); st.Items["hostname"] != 0 {
		t.Errorf("GET /v1/drift after the flood: %+v", st)
	}
	var got float64
	deadline := time.Now().Add(eventWait)
	for got = eventsTotal(t, sock, "hostname") - eventsBefore; got < n && time.Now().Before(deadline); got = eventsTotal(t, sock, "hostname") - eventsBefore {
		time.Sleep(100 * time.Millisecond)
	}
	if got < n {
		t.Errorf("the daemon counted %.0f hostname events for %d PropertiesChanged signals", got, n)
	}
	after := rssKiB(t, pid)
	samples = append(samples, after)
	t.Logf("%d SetLocation calls (→ %d PropertiesChanged, %.0f counted) in %s; daemon RSS before %d KiB, every 2,500 calls %v KiB",
		n, n, got, sent.Round(time.Millisecond), before, samples)
	// Flat: the heap finds its level in the first quarter (the GC's
	// target, the race detector's shadow memory in test builds); memory
	// that grew with the number of signals would keep climbing after it.
	if growth := after - samples[1]; growth > 8*1024 {
		t.Errorf("daemon RSS kept growing over the last 7,500 signals: %d KiB (samples %v)", growth, samples)
	}
}

// eventsTotal reads op_dbus_events_total{source} from GET /metrics.
func eventsTotal(t *testing.T, sock, source string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := c.Get("http://op-dbus/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := `op_dbus_events_total{source="` + source + `"} `
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}
