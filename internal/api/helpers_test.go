package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/testbed"
	"github.com/prometheus/client_golang/prometheus"

	_ "github.com/op-dbus/op-dbus/internal/plugins/hostname"
)

type fakeDrift struct{}

func (fakeDrift) Status() DriftStatus {
	return DriftStatus{Mode: "report", Items: map[string]int{"hostname": 0}, LastCheck: time.Unix(0, 0).UTC()}
}

// bed is an Identity test bed with a control.Service on it.
type bed struct {
	b       *testbed.Identity
	svc     *control.Service
	dir     string
	metrics *Metrics
	h       http.Handler
}

func newBed(t testing.TB) *bed {
	b := testbed.NewIdentity(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	dir := t.TempDir()
	svc := control.New(control.Options{StateDir: dir, Source: "api"})
	t.Cleanup(func() { svc.Close() })
	m := NewMetrics(prometheus.NewRegistry())
	return &bed{b: b, svc: svc, dir: dir, metrics: m,
		h: NewHandler(svc, Options{StateDir: dir, Metrics: m, Drift: fakeDrift{}})}
}

func (e *bed) location(t testing.TB) string {
	t.Helper()
	out, err := e.b.Busctl(context.Background(), "get-property", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "Location")
	if err != nil {
		t.Fatalf("busctl: %v %s", err, out)
	}
	return strings.TrimSpace(out)
}

// do sends a request and returns the status and body.
func do(t testing.TB, c *http.Client, method, url, ctype string, body []byte, hdr ...string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// wantError checks an error response's status, code and message.
func wantError(t testing.TB, what string, status int, body []byte, wantStatus int, wantCode, wantIn string) errorBody {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("%s: not a JSON error (%v): %s", what, err, body)
	}
	if status != wantStatus || eb.Code != wantCode || !strings.Contains(eb.Error, wantIn) {
		t.Fatalf("%s: got %d %q %q, want %d %q containing %q", what, status, eb.Code, eb.Error, wantStatus, wantCode, wantIn)
	}
	return eb
}
