package main

import (
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
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/statedir"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// Every front end changes the host through the one transaction service,
// so every one honours the same retention: a CLI apply, an API apply, a
// D-Bus apply and an enforce-mode correction in one state directory with
// --snapshot-keep 2 leave two snapshots, and each pruning is audited.
func TestTestbedOnePathSnapshotKeep(t *testing.T) {
	m, env := serveBed(t, "one-a.service")
	addUnits(t, m, "one-b.service", "one-c.service", "one-d.service")
	bus := testbed.NewSystemBus(t, filepath.Join("..", "..", "dist", "org.opdbus1.conf"))
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	active := func(unit string) string {
		return fmt.Sprintf(`{"version":1,"plugins":{"systemd":{"units":{%q:{"active_state":"active"}}}}}`, unit)
	}
	keep := "--snapshot-keep=2"

	// 1. The CLI.
	r := run(t, env, "", "--user", "--state-dir="+sd, keep, "apply", "--yes", writeFile(t, dir, "b.json", active("one-b.service")))
	wantCode(t, r, 0, "CLI apply")

	// 2. The API, 3. D-Bus and 4. the daemon's correction, all in one serve.
	sock := filepath.Join(dir, "api.sock")
	s := startServe(t, env, "--user", "--state-dir="+sd, keep, "serve", "--state", writeFile(t, dir, "a.json", active("one-a.service")),
		"--mode", "enforce", "--api-socket", sock, "--dbus", bus.Address)
	api := unixClient(sock)
	var p struct {
		PlanHash string `json:"plan_hash"`
	}
	apiPost(t, api, "/v1/plan", active("one-c.service"), 200, &p)
	apiPost(t, api, "/v1/apply", fmt.Sprintf(`{"plan_hash":%q}`, p.PlanHash), 200, nil)
	if got := oracle2(m, "is-active", "one-c.service"); got != "active" {
		t.Fatalf("after the API apply, systemctl --user says one-c.service is %q", got)
	}

	out := busctlAt(t, bus.Address, "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Plan", "s", active("one-d.service"))
	var plan struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Data) != 2 {
		t.Fatalf("Plan over D-Bus: %v %s", err, out)
	}
	if out := busctlAt(t, bus.Address, "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Apply", "s", plan.Data[0]); !strings.Contains(out, `\"success\":true`) {
		t.Fatalf("Apply over D-Bus: %s", out)
	}
	if got := oracle2(m, "is-active", "one-d.service"); got != "active" {
		t.Fatalf("after the D-Bus apply, systemctl --user says one-d.service is %q", got)
	}

	if o, err := m.Systemctl(context.Background(), "stop", "one-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	ev := s.wait(t, "correction", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if ev.Result != "success" {
		t.Fatalf("correction: %s", ev.raw)
	}
	if got := oracle2(m, "is-active", "one-a.service"); got != "active" {
		t.Fatalf("after the correction, systemctl --user says one-a.service is %q", got)
	}

	r = run(t, env, "", "--state-dir="+sd, "snapshot", "list", "-o", "json")
	wantCode(t, r, 0, "snapshot list")
	var snaps []json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &snaps); err != nil {
		t.Fatalf("snapshot list -o json: %v\n%s", err, r.stdout)
	}
	if len(snaps) != 2 {
		t.Errorf("%d snapshots after four transactions with --snapshot-keep 2, want 2:\n%s", len(snaps), r.stdout)
	}
	kinds := auditKinds(t, env, sd)
	for _, want := range []string{"apply/cli/success", "apply/api/success", "apply/dbus/success", "correction/daemon/success"} {
		if !serveHas(kinds, want) {
			t.Errorf("audit log lacks %s: %v", want, kinds)
		}
	}
	prunes := 0
	for _, k := range kinds {
		if strings.HasPrefix(k, "snapshot-prune/") {
			prunes++
		}
	}
	if prunes < 2 {
		t.Errorf("%d snapshot-prune entries, want one per pruning (2): %v", prunes, kinds)
	}
}

// A refusal has one shape whichever front end refused: while another
// transaction holds the state directory, an apply through the CLI, the
// API, D-Bus and MCP are each refused and recorded as kind "apply",
// result "refused", with the same fields and the holder's pid.
func TestTestbedOnePathRefusalShape(t *testing.T) {
	b, env := identityBed(t)
	bus := testbed.NewSystemBus(t, filepath.Join("..", "..", "dist", "org.opdbus1.conf"))
	dir := t.TempDir()
	sd := filepath.Join(dir, "state")
	doc := `{"version":1,"plugins":{"hostname":{"location":"refused-everywhere"}}}`
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")

	sock := filepath.Join(dir, "api.sock")
	serveDoc := writeFile(t, dir, "serve.json", `{"version":1,"plugins":{"hostname":{}}}`)
	startServe(t, env, "--state-dir="+sd, "serve", "--state", serveDoc, "--api-socket", sock, "--dbus", bus.Address)
	api := unixClient(sock)
	var p struct {
		PlanHash string `json:"plan_hash"`
	}
	apiPost(t, api, "/v1/plan", doc, 200, &p)
	out := busctlAt(t, bus.Address, "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Plan", "s", doc)
	var dplan struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &dplan); err != nil || len(dplan.Data) != 2 {
		t.Fatalf("Plan over D-Bus: %v %s", err, out)
	}
	cs := mcpClient(t, env, "--state-dir="+sd, "--confirm-in-process", "mcp", "--allow-apply")
	var mp mcpPlan
	mcpCall(t, cs, "plan", map[string]any{"document": json.RawMessage(doc)}, &mp)

	// Hold the state directory as a running transaction would.
	unlock, err := statedir.New(sd).Lock()
	if err != nil {
		t.Fatal(err)
	}
	pid := fmt.Sprintf("pid %d", os.Getpid())

	r := run(t, env, "", "--state-dir="+sd, "apply", "--yes", writeFile(t, dir, "doc.json", doc))
	wantCode(t, r, 1, "CLI apply while locked")
	if !strings.Contains(r.stderr, pid) {
		t.Errorf("CLI refusal does not name the holder (%s): %s", pid, r.stderr)
	}
	body := apiPost(t, api, "/v1/apply", fmt.Sprintf(`{"plan_hash":%q}`, p.PlanHash), 409, nil)
	if !strings.Contains(body, pid) || !strings.Contains(body, `"locked"`) {
		t.Errorf("API refusal: %s", body)
	}
	dout, derr := exec.Command("busctl", "--address="+bus.Address, "call", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Apply", "s", dplan.Data[0]).CombinedOutput()
	if derr == nil || !strings.Contains(string(dout), pid) {
		t.Errorf("D-Bus refusal: %v %s", derr, dout)
	}
	res := mcpCallRaw(t, cs, "apply", map[string]any{"plan_hash": mp.PlanHash})
	if !res.IsError || !strings.Contains(mcpText(res), pid) || !strings.Contains(mcpText(res), "locked") {
		t.Errorf("MCP refusal: %s", mcpText(res))
	}
	unlock()

	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Fatalf("a refused apply changed Location: %s -> %s", before, got)
	}
	r = run(t, env, "", "--state-dir="+sd, "audit", "log", "-o", "json")
	wantCode(t, r, 0, "audit log")
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatal(err)
	}
	shapes := map[string]string{}
	for _, e := range entries {
		var res, src, kind, msg string
		_ = json.Unmarshal(e["result"], &res)
		_ = json.Unmarshal(e["source"], &src)
		_ = json.Unmarshal(e["kind"], &kind)
		_ = json.Unmarshal(e["message"], &msg)
		if res != "refused" {
			continue
		}
		if kind != "apply" || !strings.Contains(msg, pid) {
			t.Errorf("refusal from %s: kind %q message %q", src, kind, msg)
		}
		var keys []string
		for k := range e {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		shapes[src] = strings.Join(keys, ",")
	}
	for _, src := range []string{"cli", "api", "dbus", "mcp"} {
		if _, ok := shapes[src]; !ok {
			t.Errorf("no refusal recorded for %s: %v", src, shapes)
		}
		if shapes[src] != shapes["cli"] {
			t.Errorf("refusal shape of %s differs from the CLI's:\n%s\n%s", src, shapes[src], shapes["cli"])
		}
	}
}

// A whole-host query on a host without NetworkManager or Open vSwitch is
// not an error: the plugins it can read are printed, the others listed
// under "unavailable" (and on stderr), exit 0. Asking for an unavailable
// plugin by name is an error.
func TestTestbedQueryUnavailablePlugins(t *testing.T) {
	_, env := identityBed(t)
	nowhere := "--ovsdb=unix:" + filepath.Join(t.TempDir(), "no-ovsdb.sock")
	r := run(t, env, "", nowhere, "query")
	wantCode(t, r, 0, "query on a host without NetworkManager and OVS")
	var q struct {
		Plugins     map[string]json.RawMessage `json:"plugins"`
		Unavailable map[string]string          `json:"unavailable"`
		Errors      map[string]string          `json:"errors"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("query output: %v\n%s", err, r.stdout)
	}
	for _, n := range []string{"networkmanager", "ovs"} {
		if _, ok := q.Unavailable[n]; !ok {
			t.Errorf("%s not listed as unavailable: %v", n, q.Unavailable)
		}
		if !strings.Contains(r.stderr, n+": ") {
			t.Errorf("stderr does not note %s: %s", n, r.stderr)
		}
	}
	if _, ok := q.Plugins["hostname"]; !ok {
		t.Errorf("hostname missing from the query: %s", r.stdout)
	}
	if len(q.Errors) != 0 {
		t.Errorf("available plugins failed: %v", q.Errors)
	}
	r = run(t, env, "", nowhere, "query", "-p", "networkmanager")
	wantCode(t, r, 1, "query -p networkmanager without NetworkManager")
}

func addUnits(t *testing.T, m *testbed.UserManager, units ...string) {
	t.Helper()
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(m.DataUnitDir, u), []byte(strings.ReplaceAll(goodUnit, "%s", u)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := m.Systemctl(context.Background(), "daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v %s", err, out)
	}
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

// apiPost posts body, checks the status and decodes the answer into out.
func apiPost(t *testing.T, c *http.Client, path, body string, status int, out any) string {
	t.Helper()
	resp, err := c.Post("http://op-dbus"+path, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("POST %s: %s, want %d: %s", path, resp.Status, status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %v %s", path, err, b)
		}
	}
	return string(b)
}

func busctlAt(t *testing.T, addr string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "busctl", append([]string{"--address=" + addr, "--json=short"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl %v: %v %s", args, err, out)
	}
	return string(out)
}

// mcpCallRaw calls a tool and returns its result, tool errors included.
func mcpCallRaw(t *testing.T, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}
