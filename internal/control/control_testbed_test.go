package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/testbed"

	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
)

func TestTestbedPlanApplyStaleUnknown(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	ctx := context.Background()
	dir := t.TempDir()
	s := control.New(control.Options{StateDir: dir, Source: "api"})
	defer s.Close()
	other := control.New(control.Options{StateDir: dir, Source: "api"})
	defer other.Close()

	doc, err := s.Decode([]byte(`{"version":1,"plugins":{"hostname":{"location":"rack 1"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Plan(ctx, doc)
	if err != nil || p.InSync || len(p.Ops) != 1 || !strings.HasPrefix(p.PlanHash, "sha256:") {
		t.Fatalf("plan %+v %v", p, err)
	}
	// Another server's plan hash is refused.
	if _, err := other.Apply(ctx, p.PlanHash, "client-b", 0); !errors.Is(err, control.ErrUnknownPlan) {
		t.Fatalf("foreign hash: %v", err)
	}
	// The live state changes after the plan: refused, nothing changed.
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetLocation", "sb", "elsewhere", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, err := s.Apply(ctx, p.PlanHash, "client-a", 0); !errors.Is(err, control.ErrStalePlan) {
		t.Fatalf("stale plan: %v", err)
	}
	if got, _ := b.Busctl(ctx, "get-property", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "Location"); strings.TrimSpace(got) != `s "elsewhere"` {
		t.Fatalf("a refused apply changed the host: %s", got)
	}
	p, err = s.Plan(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Apply(ctx, p.PlanHash, "client-a", 0)
	if err != nil || !r.Success {
		t.Fatalf("apply %+v %v", r, err)
	}
	if got, _ := b.Busctl(ctx, "get-property", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "Location"); strings.TrimSpace(got) != `s "rack 1"` {
		t.Fatalf("Location after apply: %s", got)
	}
	// A plan is applied once.
	if _, err := s.Apply(ctx, p.PlanHash, "client-a", 0); !errors.Is(err, control.ErrUnknownPlan) {
		t.Fatalf("second apply of the same plan: %v", err)
	}
	es, err := s.AuditLog(time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	var results []string
	for _, e := range es {
		results = append(results, e.Result+":"+e.Actor.Client)
	}
	want := "refused:client-b refused:client-a success:client-a refused:client-a"
	if strings.Join(results, " ") != want {
		t.Fatalf("audit %q, want %q", strings.Join(results, " "), want)
	}
	if _, err := s.AuditVerify(); err != nil {
		t.Fatal(err)
	}
}

func TestTestbedQueryCacheInvalidation(t *testing.T) {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	ctx := context.Background()
	s := control.New(control.Options{StateDir: t.TempDir(), QueryCacheTTL: time.Hour})
	defer s.Close()
	location := func() string {
		r, err := s.Query(ctx, []string{"hostname"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(r.Plugins["hostname"])
		return string(b)
	}
	before := location()
	if out, err := b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetLocation", "sb", "cache-test", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if got := location(); got != before {
		t.Fatalf("the cache was not used: %s", got)
	}
	s.Invalidate("hostname")
	if got := location(); !strings.Contains(got, `"location":"cache-test"`) {
		t.Fatalf("after Invalidate: %s", got)
	}
}
