package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// mcpClient starts `op-dbus [args] mcp [mcpArgs]` and connects the Go SDK's
// client to it over stdio.
func mcpClient(t *testing.T, env []string, args ...string) *mcp.ClientSession {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "op-dbus-e2e", Version: "0.1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := c.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect to op-dbus mcp: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func mcpCall(t *testing.T, cs *mcp.ClientSession, name string, args, out any) *mcp.CallToolResult {
	t.Helper()
	res := mcpCallRaw(t, cs, name, args)
	if res.IsError {
		t.Fatalf("%s: tool error: %s", name, mcpText(res))
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s output: %v\n%s", name, err, b)
		}
	}
	return res
}

func mcpText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

type mcpPlan struct {
	PlanHash string `json:"plan_hash"`
	InSync   bool   `json:"in_sync"`
	Ops      []struct {
		ID string `json:"id"`
	} `json:"ops"`
}

func TestTestbedMCPStdioReadOnly(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	cs := mcpClient(t, env, "--state-dir="+dir, "mcp")

	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.InputSchema == nil {
			t.Errorf("tool %s has no input schema", tl.Name)
		}
	}
	if slices.Contains(names, "apply") || !slices.Contains(names, "query_state") || !slices.Contains(names, "plan") {
		t.Errorf("tools: %v", names)
	}

	// query_state is the CLI's query.
	var q map[string]any
	mcpCall(t, cs, "query_state", map[string]any{"plugins": []string{"hostname"}}, &q)
	r := run(t, env, "", "--state-dir="+dir, "query", "-p", "hostname")
	wantCode(t, r, 0, "query")
	var cliQ map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &cliQ); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q, cliQ) {
		t.Errorf("query_state over stdio differs from `op-dbus query -p hostname`:\nmcp %v\ncli %v", q, cliQ)
	}

	// plan agrees with diff.
	doc := `{"version":1,"plugins":{"hostname":{"location":"e2e rack"}}}`
	var p mcpPlan
	mcpCall(t, cs, "plan", map[string]any{"document": doc}, &p)
	path := writeFile(t, dir, "doc.json", doc)
	want := planOps(t, env, "--state-dir="+dir, "diff", path)
	var got []string
	for _, o := range p.Ops {
		got = append(got, o.ID)
	}
	if p.PlanHash == "" || !reflect.DeepEqual(got, want) {
		t.Errorf("plan ops %v (hash %q), diff says %v", got, p.PlanHash, want)
	}

	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "apply", Arguments: map[string]any{"plan_hash": p.PlanHash}})
	if err == nil || !strings.Contains(err.Error(), `unknown tool "apply"`) {
		t.Errorf("apply on a read-only server: %v", err)
	}
	rr, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "opdbus://state"})
	if err != nil || len(rr.Contents) != 1 || !strings.Contains(rr.Contents[0].Text, `"hostname"`) {
		t.Errorf("resource opdbus://state: %v %+v", err, rr)
	}
	if after := busProp(t, b, "org.freedesktop.hostname1", "Location"); after != before {
		t.Errorf("read-only server changed Location: %s -> %s", before, after)
	}
}

// Without `op-dbus commit`, an apply through MCP is rolled back: the
// confirm timer cannot be switched off.
func TestTestbedMCPStdioApplyRollsBackWithoutCommit(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	cs := mcpClient(t, env, "--state-dir="+dir, "--confirm-in-process", "mcp", "--allow-apply", "--confirm-within=3s")
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	var p mcpPlan
	mcpCall(t, cs, "plan", map[string]any{"document": map[string]any{"version": 1, "plugins": map[string]any{"hostname": map[string]any{"location": "unconfirmed"}}}}, &p)
	var a struct {
		Success         bool      `json:"success"`
		AwaitingConfirm bool      `json:"awaiting_confirm"`
		Deadline        time.Time `json:"deadline"`
	}
	mcpCall(t, cs, "apply", map[string]any{"plan_hash": p.PlanHash}, &a)
	if !a.Success || !a.AwaitingConfirm {
		t.Fatalf("apply: %+v", a)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != `s "unconfirmed"` {
		t.Fatalf("Location after apply: %s", got)
	}
	deadline := time.Now().Add(time.Minute)
	for busProp(t, b, "org.freedesktop.hostname1", "Location") != before {
		if time.Now().After(deadline) {
			t.Fatalf("not rolled back a minute after the confirm deadline")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The audit log names the client.
	r := run(t, env, "", "--state-dir="+dir, "audit", "log", "-o", "json")
	if !strings.Contains(r.stdout, "mcp:op-dbus-e2e/0.1") {
		t.Errorf("audit log does not name the MCP client:\n%s", r)
	}
}

// Garbage on stdin and a client that vanishes mid-call: a JSON-RPC error or
// a clean exit, never a crash, and nothing changed.
func TestTestbedMCPStdioBadInput(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"
	for _, tc := range []struct{ name, stdin string }{
		{"not json", "this is not JSON-RPC\n"},
		{"binary", "\x00\x01\x02\xff\xfe\n"},
		{"json but not json-rpc", `{"hello": "world"}` + "\n" + `[1,2,3]` + "\n"},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"initial`},
		{"garbage after initialize", init + "}}}{{{\n"},
		{"apply of an unknown plan", init + `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"apply","arguments":{"plan_hash":"sha256:00"}}}` + "\n"},
		{"apply with a bad argument", init + `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"apply","arguments":{"plan_hash":7}}}` + "\n"},
		{"disconnect mid-call", init + `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"plan","arguments":{"document":{"version":1,"plugins":{"hostname":{"location":"mid-call"}}}}}}` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, env, tc.stdin, "--state-dir="+dir, "mcp", "--allow-apply")
			if r.code != 0 && r.code != 1 {
				t.Errorf("exit %d\n%s", r.code, r)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "DATA RACE") {
				t.Errorf("crash:\n%s", r)
			}
			// Whatever it wrote on stdout is JSON-RPC: one message, or the
			// array of errors that answers a batch (see mcpserver.StdioTransport).
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if line == "" {
					continue
				}
				type message struct {
					JSONRPC string `json:"jsonrpc"`
				}
				var ms []message
				var err error
				if strings.HasPrefix(line, "[") {
					err = json.Unmarshal([]byte(line), &ms)
				} else {
					ms = []message{{}}
					err = json.Unmarshal([]byte(line), &ms[0])
				}
				if err != nil || len(ms) == 0 || slices.ContainsFunc(ms, func(m message) bool { return m.JSONRPC != "2.0" }) {
					t.Errorf("stdout line is not JSON-RPC: %q", line)
				}
			}
		})
	}
	// With stdin held open until the answers come: apply is an unknown tool
	// on a read-only server; on an --allow-apply server an unknown plan is
	// refused and the refusal audited with the client's name.
	applyReq := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"apply","arguments":{"plan_hash":"sha256:00"}}}`
	if out := rawMCP(t, env, 2, []string{"--state-dir=" + dir, "mcp"}, init+applyReq+"\n"); !strings.Contains(out, `unknown tool \"apply\"`) {
		t.Errorf("apply on a read-only server over raw stdio: %s", out)
	}
	garbage := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"plan","arguments":{"document":{"version":1,"plugins":{"hostname":{"locaton":"x"}}}}}}`
	if out := rawMCP(t, env, 2, []string{"--state-dir=" + dir, "mcp"}, init+garbage+"\n"); !strings.Contains(out, `"isError":true`) || !strings.Contains(out, "locaton") {
		t.Errorf("plan with a misspelt field: %s", out)
	}
	if out := rawMCP(t, env, 2, []string{"--state-dir=" + dir, "mcp", "--allow-apply"}, init+applyReq+"\n"); !strings.Contains(out, "unknown plan hash") {
		t.Errorf("apply of an unknown plan over raw stdio: %s", out)
	}
	r := run(t, env, "", "--state-dir="+dir, "audit", "log", "-o", "json")
	if !strings.Contains(r.stdout, `"refused"`) || !strings.Contains(r.stdout, "mcp:raw/0") {
		t.Errorf("refused apply not audited with the client's name:\n%s", r)
	}
	if after := busProp(t, b, "org.freedesktop.hostname1", "Location"); after != before {
		t.Errorf("bad input changed Location: %s -> %s", before, after)
	}
	if _, err := os.Stat(filepath.Join(dir, "audit", "entries")); err == nil {
		r := run(t, env, "", "--state-dir="+dir, "audit", "log", "-o", "json")
		if strings.Contains(r.stdout, `"success"`) {
			t.Errorf("bad input produced a successful change in the audit log:\n%s", r.stdout)
		}
	}
}

// rawMCP writes stdin to `op-dbus args...`, waits for the response with id
// lastID, then closes stdin and returns everything the server wrote.
func rawMCP(t *testing.T, env []string, lastID int, args []string, stdin string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, stdin); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(outp)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		var m struct {
			ID *int `json:"id"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.ID != nil && *m.ID == lastID {
			break
		}
	}
	in.Close()
	_, _ = io.Copy(io.Discard, outp)
	if err := cmd.Wait(); err != nil {
		t.Errorf("op-dbus %v: %v\n%s", args, err, stderr.String())
	}
	if strings.Contains(stderr.String(), "panic") {
		t.Errorf("crash: %s", stderr.String())
	}
	return out.String()
}

// The official TypeScript SDK client drives the server (test/mcp-interop).
func TestTestbedMCPInteropTypeScript(t *testing.T) {
	proj, err := filepath.Abs(filepath.Join("..", "..", "test", "mcp-interop"))
	if err != nil {
		t.Fatal(err)
	}
	ci := os.Getenv("CI") == "true"
	node := testbed.Program(t, "node", "nodejs")
	if _, err := os.Stat(filepath.Join(proj, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		if ci {
			t.Fatalf("test/mcp-interop/node_modules missing: run `cd test/mcp-interop && npm ci` (%v)", err)
		}
		t.Skip("test/mcp-interop/node_modules missing: run `cd test/mcp-interop && npm ci`")
	}
	b, env := identityBed(t)
	dir := t.TempDir()
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", binary, "--state-dir="+dir)
	cmd.Dir = proj
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client.mjs: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	var s struct {
		OK     bool `json:"ok"`
		Server struct {
			Name string `json:"name"`
		} `json:"server"`
		Tools      []string `json:"tools"`
		QueryState struct {
			IsError bool           `json:"isError"`
			Result  map[string]any `json:"result"`
		} `json:"query_state"`
		Plan struct {
			IsError  bool     `json:"isError"`
			PlanHash string   `json:"plan_hash"`
			Ops      []string `json:"ops"`
		} `json:"plan"`
		Apply struct {
			Refused bool   `json:"refused"`
			Error   string `json:"error"`
		} `json:"apply"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, out)
	}
	if !s.OK || s.Server.Name != "op-dbus" {
		t.Fatalf("summary: %s", out)
	}
	if !slices.Contains(s.Tools, "query_state") || !slices.Contains(s.Tools, "plan") || slices.Contains(s.Tools, "apply") {
		t.Errorf("tools: %v", s.Tools)
	}
	r := run(t, env, "", "--state-dir="+dir, "query", "-p", "hostname")
	var cliQ map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &cliQ); err != nil {
		t.Fatal(err)
	}
	if s.QueryState.IsError || !reflect.DeepEqual(s.QueryState.Result, cliQ) {
		t.Errorf("query_state via TypeScript: %v, CLI: %v", s.QueryState.Result, cliQ)
	}
	if s.Plan.IsError || !strings.HasPrefix(s.Plan.PlanHash, "sha256:") || len(s.Plan.Ops) == 0 {
		t.Errorf("plan via TypeScript: %+v", s.Plan)
	}
	if !s.Apply.Refused || !strings.Contains(s.Apply.Error, "apply") {
		t.Errorf("apply via TypeScript not refused: %+v", s.Apply)
	}
	if after := busProp(t, b, "org.freedesktop.hostname1", "Location"); after != before {
		t.Errorf("interop run changed Location: %s -> %s", before, after)
	}
}
