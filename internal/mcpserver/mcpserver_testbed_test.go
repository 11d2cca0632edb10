package mcpserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/cli"
	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/mcpserver"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

const testClient = "op-dbus-test"

// serve starts a server over svc and connects a Go SDK client to it in
// memory.
func serve(t *testing.T, svc *control.Service, opts mcpserver.Options) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	ct, st := mcp.NewInMemoryTransports()
	srv := mcpserver.New(svc, opts)
	ss, err := srv.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := mcp.NewClient(&mcp.Implementation{Name: testClient, Version: "1.2.3"}, nil)
	cs, err := c.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Wait() })
	return cs
}

func newService(t *testing.T) (*control.Service, string) {
	t.Helper()
	dir := t.TempDir()
	svc := control.New(control.Options{StateDir: dir, Source: "mcp"})
	t.Cleanup(func() { svc.Close() })
	return svc, dir
}

// call calls a tool and decodes its structured output into out (when not
// nil); it returns the result so callers can look at IsError.
func call(t *testing.T, cs *mcp.ClientSession, name string, args any, out any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", name, err)
	}
	if out != nil && !res.IsError {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s output: %v\n%s", name, err, b)
		}
	}
	return res
}

func text(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	r, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range r.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := cli.Run(args, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("op-dbus %v: exit %d\n%s%s", args, code, out.String(), errb.String())
	}
	return out.String()
}

func location(t *testing.T, b *testbed.Identity) string {
	t.Helper()
	out, err := b.Busctl(context.Background(), "get-property", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "Location")
	if err != nil {
		t.Fatalf("busctl: %v %s", err, out)
	}
	return strings.TrimSpace(out)
}

type planOut struct {
	PlanHash string `json:"plan_hash"`
	InSync   bool   `json:"in_sync"`
	Ops      []struct {
		ID          string `json:"id"`
		Description string `json:"description"`
	} `json:"ops"`
}

func planLocation(t *testing.T, cs *mcp.ClientSession, loc string) planOut {
	t.Helper()
	var p planOut
	doc := map[string]any{"version": 1, "plugins": map[string]any{"hostname": map[string]any{"location": loc}}}
	if res := call(t, cs, "plan", map[string]any{"document": doc}, &p); res.IsError {
		t.Fatalf("plan: %s", text(res))
	}
	if p.PlanHash == "" || p.InSync || len(p.Ops) == 0 {
		t.Fatalf("plan of location %q: %+v", loc, p)
	}
	return p
}

func auditEntries(t *testing.T, svc *control.Service) []ledger.Entry {
	t.Helper()
	es, err := svc.AuditLog(time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestTestbedMCPReadOnly(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	svc, dir := newService(t)
	cs := serve(t, svc, mcpserver.Options{})

	want := []string{"audit_log", "audit_verify", "check_network", "history", "introspect_bus", "plan", "query_state", "search", "snapshot_list", "verify"}
	if got := toolNames(t, cs); !reflect.DeepEqual(got, want) {
		t.Errorf("tools without --allow-apply: %v, want %v", got, want)
	}

	// query_state is what `op-dbus query -p hostname` prints.
	var q map[string]any
	if res := call(t, cs, "query_state", map[string]any{"plugins": []string{"hostname"}}, &q); res.IsError {
		t.Fatalf("query_state: %s", text(res))
	}
	var cliQ map[string]any
	if err := json.Unmarshal([]byte(runCLI(t, "--state-dir", dir, "query", "-p", "hostname")), &cliQ); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(q, cliQ) {
		t.Errorf("query_state differs from the CLI:\nmcp %v\ncli %v", q, cliQ)
	}
	if h, _ := q["plugins"].(map[string]any)["hostname"].(map[string]any); h == nil || h["static_hostname"] == nil {
		t.Errorf("query_state has no hostname state: %v", q)
	}

	// The resource holds the same state.
	rr, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "opdbus://state/hostname"})
	if err != nil {
		t.Fatal(err)
	}
	var rh map[string]any
	if err := json.Unmarshal([]byte(rr.Contents[0].Text), &rh); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rh, cliQ["plugins"].(map[string]any)["hostname"]) {
		t.Errorf("resource opdbus://state/hostname: %v", rh)
	}
	if _, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: "opdbus://state/nosuch"}); err == nil {
		t.Errorf("resource of an unknown plugin: no error")
	}

	before := location(t, b)
	p := planLocation(t, cs, "rack 9")
	if !strings.Contains(p.Ops[0].ID, "hostname") {
		t.Errorf("ops: %+v", p.Ops)
	}

	// apply does not exist: the SDK's unknown-tool error.
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "apply", Arguments: map[string]any{"plan_hash": p.PlanHash}})
	if err == nil || !strings.Contains(err.Error(), `unknown tool "apply"`) {
		t.Errorf("apply without --allow-apply: %v", err)
	}

	// Bad input: schema violations and bad documents are tool errors.
	for _, tc := range []struct {
		name string
		args any
		want string
	}{
		{"query_state", map[string]any{"plugins": "hostname"}, "plugins"},
		{"query_state", map[string]any{"plugins": []string{"nosuch"}}, `unknown plugin "nosuch"`},
		{"plan", map[string]any{}, "document"},
		{"plan", map[string]any{"document": 42}, "document"},
		{"plan", map[string]any{"document": map[string]any{"version": 1, "plugins": map[string]any{"hostname": map[string]any{"locaton": "x"}}}}, "locaton"},
		{"plan", map[string]any{"document": "version: 1\nplugins: [oops"}, "document"},
		{"verify", map[string]any{"document": map[string]any{"version": 1}, "extra": true}, "extra"},
		{"audit_log", map[string]any{"since": "yesterday"}, "since"},
	} {
		res := call(t, cs, tc.name, tc.args, nil)
		if !res.IsError || !strings.Contains(text(res), tc.want) {
			t.Errorf("%s %v: want an error naming %q, got error=%v %s", tc.name, tc.args, tc.want, res.IsError, text(res))
		}
	}
	if got := location(t, b); got != before {
		t.Errorf("a read-only server changed Location: %s -> %s", before, got)
	}
	var v struct {
		OK         bool  `json:"ok"`
		Mismatches []any `json:"mismatches"`
	}
	call(t, cs, "verify", map[string]any{"document": `{"version":1,"plugins":{"hostname":{"location":"rack 9"}}}`}, &v)
	if v.OK || len(v.Mismatches) != 1 {
		t.Errorf("verify of an unapplied change: %+v", v)
	}
}

func TestTestbedMCPApply(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	opts := mcpserver.Options{AllowApply: true, ConfirmWithin: 30 * time.Second}

	// A plan from another server is refused, and the refusal audited.
	svcA, dirA := newService(t)
	csA := serve(t, svcA, opts)
	svcB, _ := newService(t)
	csB := serve(t, svcB, opts)
	if got := toolNames(t, csA); !slices.Contains(got, "apply") {
		t.Fatalf("apply not listed with --allow-apply: %v", got)
	}
	before := location(t, b)
	foreign := planLocation(t, csA, "rack 11")
	res := call(t, csB, "apply", map[string]any{"plan_hash": foreign.PlanHash}, nil)
	if !res.IsError || !strings.Contains(text(res), "unknown plan") {
		t.Errorf("apply of another server's plan: error=%v %s", res.IsError, text(res))
	}

	// A stale plan (the property changed out of band) is refused.
	stale := planLocation(t, csB, "rack 12")
	if out, err := b.Busctl(context.Background(), "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetLocation", "sb", "out of band", "false"); err != nil {
		t.Fatalf("SetLocation: %v %s", err, out)
	}
	res = call(t, csB, "apply", map[string]any{"plan_hash": stale.PlanHash}, nil)
	if !res.IsError || !strings.Contains(text(res), "stale plan") {
		t.Errorf("apply of a stale plan: error=%v %s", res.IsError, text(res))
	}
	if got := location(t, b); got != `s "out of band"` {
		t.Errorf("refused apply changed Location: %s (was %s)", got, before)
	}
	refused := 0
	for _, e := range auditEntries(t, svcB) {
		if e.Result == "refused" && e.Source == "mcp" && e.Actor.Client == "mcp:"+testClient+"/1.2.3" {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("want 2 refusals audited with the client's name, got %d: %+v", refused, auditEntries(t, svcB))
	}

	// A fresh plan applies, waits for confirmation, and stays after commit.
	p := planLocation(t, csA, "rack 9")
	var ar control.ApplyResult
	if res := call(t, csA, "apply", map[string]any{"plan_hash": p.PlanHash}, &ar); res.IsError {
		t.Fatalf("apply: %s", text(res))
	}
	if !ar.Success || !ar.AwaitingConfirm || time.Until(ar.Deadline) <= 0 {
		t.Fatalf("apply result: %+v", ar)
	}
	if got := location(t, b); got != `s "rack 9"` {
		t.Fatalf("Location after apply: %s", got)
	}
	// The same plan cannot be applied twice.
	if res := call(t, csA, "apply", map[string]any{"plan_hash": p.PlanHash}, nil); !res.IsError {
		t.Errorf("second apply of the same plan_hash succeeded")
	}
	runCLI(t, "--state-dir", dirA, "commit")
	deadline := time.Now().Add(time.Minute)
	for {
		var ok bool
		for _, e := range auditEntries(t, svcA) {
			if e.Kind == "apply" && e.Result != "refused" && e.Actor.Client == "mcp:"+testClient+"/1.2.3" {
				if e.Result != "success" {
					t.Fatalf("apply audit entry: %+v", e)
				}
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit entry for the committed apply: %+v", auditEntries(t, svcA))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := location(t, b); got != `s "rack 9"` {
		t.Errorf("Location after commit: %s", got)
	}
	var hist struct {
		Entries []ledger.Entry `json:"entries"`
	}
	call(t, csA, "history", map[string]any{"plugin": "hostname"}, &hist)
	if len(hist.Entries) == 0 || hist.Entries[len(hist.Entries)-1].Result != "success" {
		t.Errorf("history: %+v", hist)
	}
	var av struct {
		OK bool `json:"ok"`
	}
	if res := call(t, csA, "audit_verify", map[string]any{}, &av); res.IsError || !av.OK {
		t.Errorf("audit_verify: %s", text(res))
	}
}
