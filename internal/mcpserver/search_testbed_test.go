package mcpserver_test

import (
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/mcpserver"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// TestTestbedMCPSearch asks the search tool about the identity bed: a
// method found by meaning with its open command, a plugin setting, and bad
// queries refused as tool errors.
func TestTestbedMCPSearch(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	svc, _ := newService(t)
	cs := serve(t, svc, mcpserver.Options{})

	var out mcpserver.SearchOutput
	res := call(t, cs, "search", map[string]any{"query": "set the time zone", "k": 5, "services": []string{"org.freedesktop.timedate1"}}, &out)
	if res.IsError {
		t.Fatalf("search: %s", text(res))
	}
	const setTZ = "dbus/system/org.freedesktop.timedate1/org/freedesktop/timedate1#org.freedesktop.timedate1/method/SetTimezone"
	found := false
	for _, r := range out.Results {
		if r.Doc.ID == setTZ {
			found = r.Doc.Open == "op-dbus introspect --bus system --service org.freedesktop.timedate1"
		}
	}
	if !found || out.Documents < 20 {
		t.Fatalf("SetTimezone not in the top 5 with its open command (%d documents): %+v", out.Documents, out.Results)
	}
	res = call(t, cs, "search", map[string]any{"query": "static hostname", "kinds": []string{"setting"}, "k": 1}, &out)
	if res.IsError || len(out.Results) != 1 || out.Results[0].Doc.ID != "state/hostname/static_hostname" {
		t.Fatalf("setting: %s %+v", text(res), out.Results)
	}
	for q, want := range map[string]string{"": "empty query", "\xff": "empty query" /* JSON carries it as U+FFFD */, strings.Repeat("x", 5000): "longer than"} {
		res := call(t, cs, "search", map[string]any{"query": q}, nil)
		if !res.IsError || !strings.Contains(text(res), want) {
			t.Errorf("query %.10q: %s", q, text(res))
		}
	}
}
