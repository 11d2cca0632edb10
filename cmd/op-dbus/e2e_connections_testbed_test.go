package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// `op-dbus serve` with three D-Bus plugins (hostname, timedate, locale),
// their watchers, the API, MCP and org.opdbus1 on the same system bus holds
// exactly one connection to that bus, whatever its front ends are asked;
// and reloading (which restarts every watcher) leaves no match rule behind
// on it. busctl and the bus's own statistics are the oracles.
func TestTestbedServeConnectionsOnePerBus(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "conn-test", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{
		"hostname":{"location":"conn-test"},
		"timedate":{"local_rtc":false},
		"locale":{"vconsole_keymap_toggle":""}}}`)
	sock := filepath.Join(dir, "api.sock")
	s := startServe(t, env, "--state-dir="+filepath.Join(dir, "state"), "serve", "--state", doc, "--mode", "report",
		"--dbus", "system", "--api-socket", sock, "--mcp")
	pid := s.cmd.Process.Pid

	// Ready, and org.opdbus1 is on the bus (its keeper may take a moment).
	waitFor(t, "org.opdbus1 on the bus", func() (bool, string) {
		out, err := b.Busctl(ctx, "--json=short", "get-property", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Mode")
		return err == nil && strings.Contains(out, `"report"`), out
	})
	// Every front end reads through the plugins: MCP, org.opdbus1, the API.
	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	cs, err := mcpHTTP(t, "http://op-dbus/mcp", unix)
	if err != nil {
		t.Fatalf("MCP over the unix socket: %v", err)
	}
	var q map[string]any
	mcpCall(t, cs, "query_state", map[string]any{"plugins": []string{"hostname", "timedate", "locale"}}, &q)
	if out, err := b.Busctl(ctx, "--json=short", "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager",
		"Query", "as", "3", "hostname", "timedate", "locale"); err != nil || !strings.Contains(out, "conn-test") {
		t.Fatalf("Query over D-Bus: %v %s", err, out)
	}
	if st := apiDrift(t, sock); st.Mode != "report" {
		t.Fatalf("API drift: %+v", st)
	}

	// The bed's dbus-daemon runs in a PID namespace of its own, so the bus
	// cannot name the PID of a client outside it (busctl list shows "-"):
	// the kernel is the oracle. serve's sockets connected to the bus are
	// those whose peer is one of the sockets dbus-daemon accepted on its
	// listening path.
	if n := busSockets(t, ctx, b, pid); n != 1 {
		out, _ := b.Busctl(ctx, "list", "--unique")
		t.Fatalf("op-dbus serve (pid %d) holds %d connections to the system bus, want 1; the bus's clients:\n%s", pid, n, out)
	}
	// That one connection owns org.opdbus1 (the D-Bus service shares it).
	out, err := b.Busctl(ctx, "--json=short", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
		"org.freedesktop.DBus", "GetNameOwner", "s", "org.opdbus1")
	var owner struct {
		Data []string `json:"data"`
	}
	if err != nil || json.Unmarshal([]byte(out), &owner) != nil || len(owner.Data) != 1 {
		t.Fatalf("GetNameOwner org.opdbus1: %v %s", err, out)
	}
	name := owner.Data[0]
	rules := matchRules(t, ctx, b, name)
	t.Logf("serve's one connection %s has %d match rules", name, rules)

	// A change is still seen through the shared connection.
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "elsewhere", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ev := s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "hostname" })
	if len(ev.Changes) != 1 || ev.Changes[0] != `location desired "conn-test", current "elsewhere"` {
		t.Errorf("drift through the shared connection: %s", ev.raw)
	}

	// Every reload stops and starts all watchers: their rules go with them.
	const reloads = 20
	for range reloads {
		if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		s.wait(t, "reload", func(e daemonEvent) bool { return strings.Contains(e.raw, `"ok":true`) })
	}
	waitFor(t, fmt.Sprintf("%d match rules after %d reloads", rules, reloads), func() (bool, string) {
		n := matchRules(t, ctx, b, name)
		return n == rules, fmt.Sprintf("%d match rules", n)
	})
	if n := busSockets(t, ctx, b, pid); n != 1 {
		t.Fatalf("after %d reloads serve holds %d connections to the system bus, want 1", reloads, n)
	}
}

// busSockets counts pid's sockets connected to the bed's bus: its socket
// inodes (/proc/PID/fd) that are the peer of a socket dbus-daemon accepted
// on the bus's path. The kernel puts an accepted socket in its client's
// network namespace, so ss here (not in the bed's) lists those of
// serve's connections.
func busSockets(t *testing.T, ctx context.Context, b *testbed.Identity, pid int) int {
	t.Helper()
	path := strings.TrimPrefix(b.BusAddress, "unix:path=")
	o, err := exec.CommandContext(ctx, "ss", "-x", "-n", "-H").CombinedOutput()
	out := string(o)
	if err != nil {
		t.Fatalf("ss -x (iproute2): %v %s", err, out)
	}
	peers := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		// u_str ESTAB RECV-Q SEND-Q LOCAL LOCAL-INODE PEER PEER-INODE
		if len(f) == 8 && f[1] == "ESTAB" && f[4] == path {
			peers[f[7]] = true
		}
	}
	if len(peers) == 0 {
		t.Fatalf("ss shows no connection accepted on %s:\n%s", path, out)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok && peers[strings.TrimSuffix(ino, "]")] {
			n++
		}
	}
	return n
}

// matchRules is dbus-daemon's count of a connection's match rules.
func matchRules(t *testing.T, ctx context.Context, b *testbed.Identity, name string) int {
	t.Helper()
	out, err := b.Busctl(ctx, "--json=short", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
		"org.freedesktop.DBus.Debug.Stats", "GetConnectionStats", "s", name)
	if err != nil {
		t.Fatalf("GetConnectionStats %s: %v %s", name, err, out)
	}
	var reply struct {
		Data []map[string]struct {
			Data any `json:"data"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil || len(reply.Data) != 1 {
		t.Fatalf("GetConnectionStats: %v\n%s", err, out)
	}
	n, ok := reply.Data[0]["MatchRules"].Data.(float64)
	if !ok {
		t.Fatalf("GetConnectionStats: no MatchRules in %s", out)
	}
	return int(n)
}

// waitFor polls cond until it holds, failing after eventWait with its
// last word.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, eventWait, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
