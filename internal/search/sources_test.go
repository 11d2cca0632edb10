package search

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/search/embed"
)

func walked(bus string, names ...string) func(context.Context, Bus) (*introspect.Result, error) {
	return func(_ context.Context, b Bus) (*introspect.Result, error) {
		res := &introspect.Result{Bus: bus}
		for _, n := range names {
			s := introspect.Service{Name: n, Objects: []introspect.Object{{Path: "/x", Interfaces: []introspect.ObjIface{{
				Name: n, Methods: []introspect.Method{{Name: "Do"}}}}}}}
			if strings.HasPrefix(n, "broken.") {
				s = introspect.Service{Name: n, Error: "no such name on the bus"}
			}
			res.Services = append(res.Services, s)
		}
		return res, nil
	}
}

// TestGatherTwoBuses: the same service on two buses makes two sets of
// documents that do not collide; a failing optional bus is skipped with
// its reason, a failing required one fails the gather; plugin states and
// audit entries come from their readers.
func TestGatherTwoBuses(t *testing.T) {
	ctx := context.Background()
	var logged []string
	down := func(context.Context, Bus) (*introspect.Result, error) { return nil, errors.New("no answer") }
	src := Sources{
		Buses: []Bus{
			{Name: "system", Walk: walked("system", "org.example.A", "broken.B")},
			{Name: "session", Walk: walked("session", "org.example.A")},
			{Name: "unix:path=/run/x", Optional: true, Walk: down},
		},
		Plugins: func(context.Context) (map[string]any, map[string]error, error) {
			return map[string]any{"hostname": map[string]any{"static_hostname": "h1"}}, map[string]error{"ovs": errors.New("not here")}, nil
		},
		Audit: func() ([]ledger.Entry, error) { return []ledger.Entry{{Seq: 0, Kind: "apply", Result: "ok"}}, nil },
		Flags: "--user",
		Log:   func(f string, a ...any) { logged = append(logged, f) },
	}
	got, err := Gather(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Buses) != 3 || got.Buses[0].Services != 1 || got.Buses[1].Services != 1 || got.Buses[2].Skipped == "" ||
		!strings.Contains(got.Buses[2].Skipped, "no answer") {
		t.Fatalf("bus reports: %+v", got.Buses)
	}
	sys, ses := got.Docs[DBusSource("system", "org.example.A")], got.Docs[DBusSource("session", "org.example.A")]
	if len(sys) == 0 || len(sys) != len(ses) {
		t.Fatalf("documents: system %d, session %d", len(sys), len(ses))
	}
	ids := map[string]bool{}
	for _, d := range append(append([]Document{}, sys...), ses...) {
		if ids[d.ID] {
			t.Fatalf("ID %s twice", d.ID)
		}
		ids[d.ID] = true
	}
	if d, ok := got.Docs[DBusSource("system", "broken.B")]; !ok || d != nil {
		t.Errorf("a service that could not be walked must be present and empty: %v %v", ok, d)
	}
	if len(got.Docs[StateSource("hostname")]) != 1 || got.PluginErrors["ovs"] == nil {
		t.Errorf("plugins: %v %v", got.Docs[StateSource("hostname")], got.PluginErrors)
	}
	if a := got.Docs[AuditSource]; len(a) != 1 || !strings.Contains(a[0].Open, "--user audit show 0") {
		t.Errorf("audit: %+v", a)
	}
	for s := range got.Docs {
		if strings.Contains(s, "unix:path") {
			t.Errorf("a skipped bus left %s", s)
		}
	}
	if len(logged) == 0 {
		t.Error("nothing logged")
	}
	// stats count per bus
	ix := New(embed.NewBuiltin(32), nil, nil)
	if _, err := ix.Replace(ctx, got.Docs, nil); err != nil {
		t.Fatal(err)
	}
	if st := ix.Stats(); st.Buses["system"] != len(sys) || st.Buses["session"] != len(ses) || len(st.Buses) != 2 {
		t.Errorf("stats per bus: %v", st.Buses)
	}

	src.Buses[2].Optional = false
	if _, err := Gather(ctx, src); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("a required bus that is down: %v", err)
	}
}

func TestBusOfSource(t *testing.T) {
	for src, want := range map[string]string{
		"dbus/system/org.freedesktop.hostname1":          "system",
		"dbus/session/org.freedesktop.systemd1":          "session",
		"dbus/unix:path=/run/user/0/bus/org.example.Foo": "unix:path=/run/user/0/bus",
		"state/hostname": "",
		"audit":          "",
	} {
		if got, ok := BusOfSource(src); got != want || ok != (want != "") {
			t.Errorf("BusOfSource(%q) = %q, %v", src, got, ok)
		}
	}
}

func TestReadAuditWithoutLog(t *testing.T) {
	dir := t.TempDir()
	es, next, err := ReadAudit(dir, 3)
	if err != nil || es != nil || next != 3 || ledger.Exists(dir) || AuditSize(dir) != 0 {
		t.Fatalf("%v %d %v", es, next, err)
	}
}
