package mcpserver_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/mcpserver"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// Tool arguments with a duplicate key, at any depth, are a tool error that
// names the key, checked by the same decoder as HTTP and D-Bus bodies;
// nothing is planned or applied with either value.
func TestTestbedMCPDuplicateKeys(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	svc, _ := newService(t)
	cs := serve(t, svc, mcpserver.Options{AllowApply: true, ConfirmWithin: 30 * time.Second})

	before := location(t, b)
	p := planLocation(t, cs, "dup rack")
	zero := "sha256:" + strings.Repeat("0", 64)
	for _, c := range []struct{ tool, args, want string }{
		// The issue: the last plan_hash would win.
		{"apply", `{"plan_hash":"` + zero + `","plan_hash":"` + p.PlanHash + `"}`, "invalid arguments: plan_hash: duplicate key"},
		{"apply", `{"plan_hash":"` + p.PlanHash + `","plan\u005fhash":"` + zero + `"}`, "invalid arguments: plan_hash: duplicate key"},
		// A document given as an object: the SDK would keep the last location.
		{"plan", `{"document":{"version":1,"plugins":{"hostname":{"location":"a","location":"b"}}}}`,
			"invalid arguments: document.plugins.hostname.location: duplicate key"},
		{"verify", `{"document":{"version":1,"plugins":{"hostname":{"location":"a"}}},"document":{}}`, "invalid arguments: document: duplicate key"},
		// A document given as a string goes through the state parser, which uses the same decoder.
		{"plan", `{"document":"{\"version\":1,\"plugins\":{\"hostname\":{\"location\":\"a\",\"location\":\"b\"}}}"}`,
			"document: plugins.hostname.location: duplicate key"},
		{"query_state", `{"plugins":["hostname"],"plugins":[]}`, "invalid arguments: plugins: duplicate key"},
	} {
		res := call(t, cs, c.tool, json.RawMessage(c.args), nil)
		if !res.IsError || !strings.Contains(text(res), c.want) {
			t.Errorf("%s %s: error=%v %q, want %q", c.tool, c.args, res.IsError, text(res), c.want)
		}
	}
	if got := location(t, b); got != before {
		t.Fatalf("a refused call changed Location: %s (was %s)", got, before)
	}
	// The plan is still there for a well-formed call.
	if res := call(t, cs, "apply", map[string]any{"plan_hash": p.PlanHash}, nil); res.IsError {
		t.Fatalf("apply: %s", text(res))
	}
	if got := location(t, b); got != `s "dup rack"` {
		t.Fatalf("Location after apply: %s", got)
	}
}
