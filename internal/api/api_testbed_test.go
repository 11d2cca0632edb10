package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

func TestTestbedAPI(t *testing.T) {
	e := newBed(t)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	c := srv.Client()
	ctx := context.Background()
	u := srv.URL

	// GET /v1/state is what svc.Query says.
	st, body, _ := do(t, c, "GET", u+"/v1/state", "", nil)
	if st != 200 {
		t.Fatalf("GET /v1/state: %d %s", st, body)
	}
	q, err := e.svc.Query(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(q)
	var got, exp any
	json.Unmarshal(body, &got)
	json.Unmarshal(want, &exp)
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("GET /v1/state\n got %s\nwant %s", body, want)
	}
	if st, body, _ := do(t, c, "GET", u+"/v1/state/hostname", "", nil); st != 200 || !strings.Contains(string(body), `"hostname"`) {
		t.Fatalf("GET /v1/state/hostname: %d %s", st, body)
	}
	st, body, _ = do(t, c, "GET", u+"/v1/state/nosuch", "", nil)
	wantError(t, "unknown plugin", st, body, 404, "unknown_plugin", "nosuch")

	plan := func(doc string) control.PlanResult {
		t.Helper()
		st, body, _ := do(t, c, "POST", u+"/v1/plan", "application/json", []byte(doc))
		var p control.PlanResult
		if err := json.Unmarshal(body, &p); st != 200 || err != nil || !strings.HasPrefix(p.PlanHash, "sha256:") {
			t.Fatalf("POST /v1/plan: %d %s", st, body)
		}
		return p
	}
	apply := func(hash string) (int, []byte) {
		st, body, _ := do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":"`+hash+`"}`))
		return st, body
	}

	// Plan, apply, the host changed.
	p := plan(`{"version":1,"plugins":{"hostname":{"location":"rack 1"}}}`)
	if p.InSync || len(p.Ops) != 1 {
		t.Fatalf("plan %+v", p)
	}
	if st, body := apply(p.PlanHash); st != 200 {
		t.Fatalf("apply: %d %s", st, body)
	}
	if got := e.location(t); got != `s "rack 1"` {
		t.Fatalf("Location after apply: %s", got)
	}
	// Applied once: the same hash again is unknown.
	st, body = apply(p.PlanHash)
	wantError(t, "second apply", st, body, 409, "unknown_plan", "unknown plan hash")

	// YAML works too.
	st, body, _ = do(t, c, "POST", u+"/v1/plan", "application/yaml", []byte("version: 1\nplugins:\n  hostname:\n    location: rack 1\n"))
	if st != 200 || !strings.Contains(string(body), `"in_sync": true`) {
		t.Fatalf("YAML plan: %d %s", st, body)
	}

	// Stale plan: 409, nothing changed, refusal audited.
	p = plan(`{"version":1,"plugins":{"hostname":{"location":"rack 2"}}}`)
	if out, err := e.b.Busctl(ctx, "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetLocation", "sb", "elsewhere", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st, body = apply(p.PlanHash)
	wantError(t, "stale plan", st, body, 409, "stale_plan", "stale plan")
	if got := e.location(t); got != `s "elsewhere"` {
		t.Fatalf("a refused apply changed the host: %s", got)
	}
	es, _ := e.svc.AuditLog(time.Time{}, "")
	if last := es[len(es)-1]; last.Result != "refused" || !strings.Contains(last.Message, "stale plan") {
		t.Fatalf("last audit entry %+v", last)
	}

	// A plan hash from another server: 409.
	other := control.New(control.Options{StateDir: t.TempDir()})
	defer other.Close()
	doc, _ := other.Decode([]byte(`{"version":1,"plugins":{"hostname":{"location":"rack 3"}}}`))
	op, err := other.Plan(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	st, body = apply(op.PlanHash)
	wantError(t, "foreign hash", st, body, 409, "unknown_plan", "made by this server")

	// Another transaction holds the lock: 409.
	p = plan(`{"version":1,"plugins":{"hostname":{"location":"rack 4"}}}`)
	unlock, err := statedir.New(e.dir).Lock()
	if err != nil {
		t.Fatal(err)
	}
	st, body = apply(p.PlanHash)
	unlock()
	wantError(t, "locked", st, body, 409, "locked", "another op-dbus transaction")
	if got := e.location(t); got != `s "elsewhere"` {
		t.Fatalf("a refused apply changed the host: %s", got)
	}

	// Bad bodies.
	es, _ = e.svc.AuditLog(time.Time{}, "")
	n0 := len(es)
	big := []byte(`{"version":1,"plugins":{"hostname":{"location":"` + strings.Repeat("x", 2<<20) + `"}}}`)
	st, body, _ = do(t, c, "POST", u+"/v1/plan", "application/json", big)
	wantError(t, "oversized plan", st, body, 413, "too_large", "limit")
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json", big)
	wantError(t, "oversized apply", st, body, 413, "too_large", "limit")
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":`))
	wantError(t, "malformed apply", st, body, 400, "malformed_json", "malformed JSON")
	st, body, _ = do(t, c, "POST", u+"/v1/plan", "application/json", []byte(`{"version":1,`))
	wantError(t, "malformed plan", st, body, 400, "malformed_json", "malformed JSON")
	st, body, _ = do(t, c, "POST", u+"/v1/apply", "application/json", []byte(`{"plan_hash":"`+p.PlanHash+`","confirm_whithin":"1s"}`))
	wantError(t, "unknown field in apply", st, body, 400, "unknown_field", "confirm_whithin")
	st, body, _ = do(t, c, "POST", u+"/v1/plan", "application/json", []byte(`{"version":1,"plugins":{"hostname":{"locaton":"x"}}}`))
	eb := wantError(t, "unknown field in plan", st, body, 400, "invalid_document", "locaton")
	if len(eb.Problems) == 0 || !strings.Contains(eb.Problems[0].Path, "locaton") {
		t.Fatalf("problems %+v", eb.Problems)
	}
	st, body, _ = do(t, c, "POST", u+"/v1/plan", "text/html", []byte(`{}`))
	wantError(t, "content type", st, body, 415, "unsupported_media_type", "text/html")
	es, _ = e.svc.AuditLog(time.Time{}, "")
	if len(es) != n0+3 {
		t.Fatalf("want the 3 refused apply requests audited, got %d new entries", len(es)-n0)
	}
	if got := e.location(t); got != `s "elsewhere"` {
		t.Fatalf("bad input changed the host: %s", got)
	}

	// Routes and methods.
	st, body, hdr := do(t, c, "DELETE", u+"/v1/state", "", nil)
	wantError(t, "method", st, body, 405, "method_not_allowed", "DELETE")
	if hdr.Get("Allow") != "GET" {
		t.Fatalf("Allow: %q", hdr.Get("Allow"))
	}
	st, body, _ = do(t, c, "GET", u+"/v1/nosuch", "", nil)
	wantError(t, "route", st, body, 404, "not_found", "/v1/nosuch")

	// Audit log, one entry, its receipt.
	st, body, _ = do(t, c, "GET", u+"/v1/audit", "", nil)
	var list struct{ Entries []ledger.Entry }
	if err := json.Unmarshal(body, &list); st != 200 || err != nil || len(list.Entries) != len(es) {
		t.Fatalf("GET /v1/audit: %d %v %d entries", st, err, len(list.Entries))
	}
	st, body, _ = do(t, c, "GET", u+"/v1/audit?plugin=hostname", "", nil)
	if err := json.Unmarshal(body, &list); st != 200 || err != nil || len(list.Entries) != 1 || list.Entries[0].Result != "success" {
		t.Fatalf("GET /v1/audit?plugin=hostname: %d %s", st, body)
	}
	st, body, _ = do(t, c, "GET", u+"/v1/audit/0", "", nil)
	var e0 ledger.Entry
	if err := json.Unmarshal(body, &e0); st != 200 || err != nil || e0.Seq != 0 || e0.Result != "success" {
		t.Fatalf("GET /v1/audit/0: %d %s", st, body)
	}
	st, body, _ = do(t, c, "GET", u+"/v1/audit/0/proof", "", nil)
	var pr ProofResponse
	if err := json.Unmarshal(body, &pr); st != 200 || err != nil {
		t.Fatalf("GET /v1/audit/0/proof: %d %s", st, body)
	}
	l, err := ledger.Open(filepath.Join(e.dir, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	key := l.PublicKey()
	l.Close()
	if err := ledger.VerifyReceipt(pr.Receipt, key); err != nil || pr.PublicKey != key {
		t.Fatalf("receipt: %v (key %q, want %q)", err, pr.PublicKey, key)
	}
	if re, _ := pr.DecodeEntry(); re.Seq != 0 || re.Result != "success" {
		t.Fatalf("receipt entry %+v", re)
	}
	st, body, _ = do(t, c, "GET", u+"/v1/audit/100000", "", nil)
	wantError(t, "missing entry", st, body, 404, "not_found", "100000")
	st, body, _ = do(t, c, "GET", u+"/v1/audit/x/proof", "", nil)
	wantError(t, "bad entry number", st, body, 400, "bad_request", `"x"`)

	// Metrics.
	e.metrics.Event("hostname1")
	st, body, _ = do(t, c, "GET", u+"/metrics", "", nil)
	for _, name := range []string{"op_dbus_drift_items{plugin=\"hostname\"}", `op_dbus_applies_total{result="success",source="api"} 1`,
		`op_dbus_applies_total{result="refused",source="api"}`, "op_dbus_query_duration_seconds", "op_dbus_apply_duration_seconds",
		fmt.Sprintf("op_dbus_audit_entries %d", len(es)), `op_dbus_events_total{source="hostname1"} 1`} {
		if st != 200 || !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s:\n%s", name, body)
		}
	}
	// Health and drift.
	st, body, _ = do(t, c, "GET", u+"/healthz", "", nil)
	if st != 200 || !strings.Contains(string(body), `"mode": "report"`) {
		t.Fatalf("healthz: %d %s", st, body)
	}
	if st, body, _ := do(t, c, "GET", u+"/v1/drift", "", nil); st != 200 || !strings.Contains(string(body), `"hostname": 0`) {
		t.Fatalf("drift: %d %s", st, body)
	}
	if _, err := e.svc.AuditVerify(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkGetState measures GET /v1/state through an HTTP client on
// loopback TCP (compare with wrk against a running op-dbus serve).
func BenchmarkGetState(b *testing.B) {
	e := newBed(b)
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	c := srv.Client()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get(srv.URL + "/v1/state")
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
