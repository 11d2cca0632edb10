// Package api is op-dbus's HTTP API: the operations of internal/control
// (query, plan with a plan hash, apply only a plan this server made, the
// audit log with inclusion proofs) as JSON over HTTP, plus /healthz,
// Prometheus /metrics and an OpenAPI description at /v1/openapi.json.
//
// NewHandler builds the handler; Serve listens on a unix socket (and, only
// with a bearer token, on TCP) and serves it. See docs/api.md.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/strictjson"
)

// DriftStatus is what the daemon knows about drift.
type DriftStatus struct {
	Mode      string         `json:"mode"`  // "report" | "enforce" | "" (no desired state)
	Items     map[string]int `json:"items"` // plugin -> number of items out of line
	LastCheck time.Time      `json:"last_check"`
}

// Drift reports the daemon's drift status.
type Drift interface{ Status() DriftStatus }

// Options configure the handler.
type Options struct {
	Drift         Drift         // may be nil
	Metrics       *Metrics      // may be nil (then /metrics serves an empty registry)
	MaxBody       int64         // request body limit, default 1 MiB
	ConfirmWithin time.Duration // used by POST /v1/apply when the body doesn't say; 0 = none
	StateDir      string        // for the audit log
	// MCP, when set, is served at /mcp (MCP's streamable HTTP transport),
	// behind the same listeners and bearer token as the rest of the API.
	MCP http.Handler
}

// MCPPath is where Options.MCP is mounted.
const MCPPath = "/mcp"

// DefaultMaxBody is the request body limit when Options.MaxBody is 0.
const DefaultMaxBody = 1 << 20

// Per-request time limits: every handler's context is bound to the request
// and to one of these.
const (
	readTimeout  = 30 * time.Second
	planTimeout  = 2 * time.Minute
	applyTimeout = 10 * time.Minute
)

//go:embed openapi.json
var openAPI []byte

// route is one endpoint. The mux, the OpenAPI test and the docs follow
// this table.
type route struct {
	method, path string
	timeout      time.Duration
	write        bool // refusals are audited
	fn           func(*handler, http.ResponseWriter, *http.Request)
}

var routes = []route{
	{"GET", "/healthz", readTimeout, false, (*handler).healthz},
	{"GET", "/metrics", readTimeout, false, (*handler).metrics},
	{"GET", "/v1/openapi.json", readTimeout, false, (*handler).openapi},
	{"GET", "/v1/state", readTimeout, false, (*handler).getState},
	{"GET", "/v1/state/{plugin}", readTimeout, false, (*handler).getState},
	{"GET", "/v1/drift", readTimeout, false, (*handler).drift},
	{"POST", "/v1/plan", planTimeout, false, (*handler).plan},
	{"POST", "/v1/apply", applyTimeout, true, (*handler).apply},
	{"GET", "/v1/audit", readTimeout, false, (*handler).auditList},
	{"GET", "/v1/audit/{n}", readTimeout, false, (*handler).auditEntry},
	{"GET", "/v1/audit/{n}/proof", readTimeout, false, (*handler).auditProof},
}

type handler struct {
	svc   *control.Service
	opts  Options
	mux   *http.ServeMux
	promh http.Handler

	refuseMu   sync.Mutex
	lastRefuse time.Time
	suppressed int
}

// NewHandler serves svc's operations.
func NewHandler(svc *control.Service, opts Options) http.Handler {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	h := &handler{svc: svc, opts: opts, mux: http.NewServeMux()}
	reg := prometheus.NewRegistry()
	if opts.Metrics != nil {
		reg = opts.Metrics.reg
	}
	h.promh = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})

	byPath := map[string][]route{}
	var order []string
	for _, rt := range routes {
		if byPath[rt.path] == nil {
			order = append(order, rt.path)
		}
		byPath[rt.path] = append(byPath[rt.path], rt)
	}
	for _, p := range order {
		rs := byPath[p]
		h.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			var allow []string
			for _, rt := range rs {
				allow = append(allow, rt.method)
				if r.Method == rt.method || (r.Method == http.MethodHead && rt.method == http.MethodGet) {
					ctx, cancel := context.WithTimeout(r.Context(), rt.timeout)
					defer cancel()
					rt.fn(h, w, r.WithContext(ctx))
					return
				}
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			h.fail(w, r, http.StatusMethodNotAllowed, "method_not_allowed",
				fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, p, strings.Join(allow, ", ")), nil)
		})
	}
	if opts.MCP != nil {
		h.mux.Handle(MCPPath, opts.MCP)
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s (see /v1/openapi.json)", r.URL.Path), nil)
	})
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// errorBody is every error response.
type errorBody struct {
	Error    string               `json:"error"`
	Code     string               `json:"code"`
	Problems []problem            `json:"problems,omitempty"`
	Result   *control.ApplyResult `json:"result,omitempty"`
}

type problem struct {
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode response: " + err.Error(), Code: "internal"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// fail answers with an error; a refused write is also audited.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string, ps []problem) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/apply" && status != http.StatusConflict {
		// 409s from the service are audited by the service itself.
		h.refuse(r.Context(), fmt.Sprintf("HTTP %d %s: %s", status, code, msg), false)
	}
	writeJSON(w, status, errorBody{Error: msg, Code: code, Problems: ps})
}

// failErr answers with err's kind's status and code (internal/errkind).
func (h *handler) failErr(w http.ResponseWriter, r *http.Request, err error) {
	status := errkind.HTTPStatus(err)
	if status == http.StatusInternalServerError {
		status = statusFor(r.Context(), status)
	}
	h.fail(w, r, status, errkind.Code(err), err.Error(), nil)
}

// refuse records a refused write in the audit log. With limit (requests
// that never authenticated) it records at most one a second and counts the
// rest, so that nobody can fill the disk by knocking.
func (h *handler) refuse(ctx context.Context, msg string, limit bool) {
	if h.opts.StateDir == "" {
		return
	}
	h.refuseMu.Lock()
	now := time.Now()
	if limit && now.Sub(h.lastRefuse) < time.Second {
		h.suppressed++
		h.refuseMu.Unlock()
		return
	}
	if limit {
		if h.suppressed > 0 {
			msg += fmt.Sprintf(" (and %d unauthenticated refusals before it not recorded)", h.suppressed)
		}
		h.lastRefuse, h.suppressed = now, 0
	}
	h.refuseMu.Unlock()

	h.svc.Refuse("apply", clientOf(ctx), msg)
	h.opts.Metrics.Applied("refused", "api", 0)
}

// --- identity ---

type clientKey struct{}

// withClient names the caller for the audit log: "uid:N" on the unix
// socket, "token" over TCP.
func withClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

func clientOf(ctx context.Context) string {
	if c, ok := ctx.Value(clientKey{}).(string); ok && c != "" {
		return c
	}
	return "api"
}

// --- bodies ---

// readBody reads at most MaxBody bytes; ok is false when it already answered.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > h.opts.MaxBody {
		h.fail(w, r, http.StatusRequestEntityTooLarge, "too_large",
			fmt.Sprintf("request body of %d bytes is larger than the %d byte limit", r.ContentLength, h.opts.MaxBody), nil)
		return nil, false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("request body is larger than the %d byte limit", h.opts.MaxBody), nil)
			return nil, false
		}
		h.fail(w, r, http.StatusBadRequest, "bad_request", "read request body: "+err.Error(), nil)
		return nil, false
	}
	return b, true
}

// ApplyRequest is the body of POST /v1/apply.
type ApplyRequest struct {
	PlanHash      string `json:"plan_hash"`
	ConfirmWithin string `json:"confirm_within,omitempty"`
}

// bodyError is a 400 with a code.
type bodyError struct {
	code, msg string
	problems  []problem
}

func (e *bodyError) Error() string { return e.msg }

// decodeApply strictly decodes an apply request (internal/strictjson: one
// JSON object, each key once, known fields only), then checks for a plan
// hash and a non-negative duration.
func decodeApply(b []byte) (ApplyRequest, time.Duration, *bodyError) {
	var req ApplyRequest
	if err := strictjson.Decode(b, &req); err != nil {
		return req, 0, strictError(err)
	}
	if req.PlanHash == "" {
		return req, 0, &bodyError{"bad_request", `plan_hash: required (the "plan_hash" from POST /v1/plan)`, nil}
	}
	if !strings.HasPrefix(req.PlanHash, "sha256:") || len(req.PlanHash) != len("sha256:")+64 {
		return req, 0, &bodyError{"bad_request", `plan_hash: not a plan hash (expected "sha256:" and 64 hex digits)`, nil}
	}
	var d time.Duration
	if req.ConfirmWithin != "" {
		var err error
		if d, err = time.ParseDuration(req.ConfirmWithin); err != nil || d < 0 {
			return req, 0, &bodyError{"bad_request", fmt.Sprintf("confirm_within: %q is not a non-negative duration (e.g. \"60s\", \"5m\")", req.ConfirmWithin), nil}
		}
	}
	return req, d, nil
}

// strictError answers a body internal/strictjson refused, by its kind.
func strictError(err error) *bodyError {
	var se *strictjson.Error
	if !errors.As(err, &se) {
		return jsonError(err)
	}
	ps := []problem{{Path: se.Path, Message: se.Msg}}
	switch se.Kind {
	case strictjson.Duplicate:
		return &bodyError{"duplicate_key", se.Error(), ps}
	case strictjson.Unknown:
		return &bodyError{"unknown_field", se.Error(), ps}
	case strictjson.Trailing:
		return &bodyError{"malformed_json", "malformed JSON: unexpected data after the request object", nil}
	case strictjson.Type, strictjson.Depth:
		return &bodyError{"bad_request", se.Error(), ps}
	}
	if se.Err != nil {
		return jsonError(se.Err)
	}
	return &bodyError{"malformed_json", "malformed JSON: " + se.Msg, nil}
}

func jsonError(err error) *bodyError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &bodyError{"malformed_json", fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err), nil}
	case errors.As(err, &te):
		return &bodyError{"bad_request", fmt.Sprintf("%s: expected %s, got JSON %s", te.Field, te.Type, te.Value), nil}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &bodyError{"malformed_json", "malformed JSON: empty or truncated body (expected {\"plan_hash\": \"sha256:...\"})", nil}
	default:
		return &bodyError{"malformed_json", "malformed JSON: " + err.Error(), nil}
	}
}

// decodePlanBody strictly decodes a state document, JSON or YAML by
// Content-Type (sniffed when none is given).
func decodePlanBody(svc *control.Service, contentType string, b []byte) (*state.Document, *bodyError) {
	isJSON := false
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return nil, &bodyError{"unsupported_media_type", fmt.Sprintf("Content-Type %q: %v", contentType, err), nil}
		}
		switch {
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			isJSON = true
		case mt == "application/yaml" || mt == "application/x-yaml" || mt == "text/yaml" || mt == "text/x-yaml":
			// The decoder sniffs JSON, which is also YAML.
		case mt == "text/plain" || mt == "application/octet-stream":
		default:
			return nil, &bodyError{"unsupported_media_type", fmt.Sprintf("Content-Type %q: send application/json or application/yaml", mt), nil}
		}
	}
	if isJSON && !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, jsonError(err)
	}
	doc, err := svc.Decode(b)
	if err != nil {
		var se *strictjson.Error
		if errors.As(err, &se) && se.Kind == strictjson.Duplicate {
			return nil, &bodyError{"duplicate_key", "invalid state document: " + err.Error(), []problem{{Path: se.Path, Message: se.Msg}}}
		}
		be := &bodyError{"invalid_document", "invalid state document: " + err.Error(), nil}
		var ps state.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				be.problems = append(be.problems, problem{Path: p.Path, Message: p.Msg})
			}
		}
		return nil, be
	}
	return doc, nil
}

// --- handlers ---

func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"status": "ok"}
	if h.opts.Drift != nil {
		out["drift"] = h.opts.Drift.Status()
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) {
	if h.opts.Metrics != nil {
		if n, ok := h.auditSize(); ok {
			h.opts.Metrics.SetAuditEntries(n)
		}
		if h.opts.Drift != nil {
			for p, n := range h.opts.Drift.Status().Items {
				h.opts.Metrics.SetDrift(p, n)
			}
		}
	}
	h.promh.ServeHTTP(w, r)
}

func (h *handler) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPI)
}

func (h *handler) drift(w http.ResponseWriter, r *http.Request) {
	st := DriftStatus{Items: map[string]int{}}
	if h.opts.Drift != nil {
		st = h.opts.Drift.Status()
		if st.Items == nil {
			st.Items = map[string]int{}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) getState(w http.ResponseWriter, r *http.Request) {
	var plugins []string
	label := "all"
	if p := r.PathValue("plugin"); p != "" {
		plugins, label = []string{p}, p
	}
	start := time.Now()
	res, err := h.svc.Query(r.Context(), plugins)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	// Only known plugins reach here, so labels cannot be made up by callers.
	h.opts.Metrics.ObserveQuery(label, time.Since(start))
	if len(plugins) == 1 {
		// A plugin asked for by name that cannot be read is an error: 503
		// when its service is absent, 500 when it failed.
		if err := res.Failure(plugins[0]); err != nil {
			status := http.StatusInternalServerError
			if errkind.Is(err, errkind.Unavailable) {
				status = http.StatusServiceUnavailable
			}
			h.fail(w, r, status, "query_failed", plugins[0]+": "+err.Error(), nil)
			return
		}
	}
	writeJSON(w, http.StatusOK, res)
}

func (h *handler) plan(w http.ResponseWriter, r *http.Request) {
	b, ok := h.readBody(w, r)
	if !ok {
		return
	}
	doc, be := decodePlanBody(h.svc, r.Header.Get("Content-Type"), b)
	if be != nil {
		status := http.StatusBadRequest
		if be.code == "unsupported_media_type" {
			status = http.StatusUnsupportedMediaType
		}
		h.fail(w, r, status, be.code, be.msg, be.problems)
		return
	}
	p, err := h.svc.Plan(r.Context(), doc)
	if err != nil {
		h.fail(w, r, statusFor(r.Context(), http.StatusInternalServerError), "plan_failed", err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (h *handler) apply(w http.ResponseWriter, r *http.Request) {
	b, ok := h.readBody(w, r)
	if !ok {
		return
	}
	req, within, be := decodeApply(b)
	if be != nil {
		h.fail(w, r, http.StatusBadRequest, be.code, be.msg, be.problems)
		return
	}
	if req.ConfirmWithin == "" {
		within = h.opts.ConfirmWithin
	}
	start := time.Now()
	res, err := h.svc.Apply(r.Context(), req.PlanHash, clientOf(r.Context()), within)
	d := time.Since(start)
	switch k := errkind.Of(err); {
	case err != nil && (k == errkind.UnknownPlan || k == errkind.StalePlan || k == errkind.Locked || k == errkind.Unsupported):
		// Refused, and audited by the service.
		h.opts.Metrics.Applied("refused", "api", d)
		writeJSON(w, errkind.HTTPStatus(err), errorBody{Error: err.Error(), Code: errkind.Code(err)})
	case err != nil:
		h.opts.Metrics.Applied("failed", "api", d)
		writeJSON(w, statusFor(r.Context(), http.StatusInternalServerError), errorBody{Error: err.Error(), Code: "apply_failed"})
	case !res.Success:
		h.opts.Metrics.Applied("failed", "api", d)
		msg := res.Error
		if msg == "" {
			msg = "apply failed"
		}
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: msg, Code: "apply_failed", Result: res})
	default:
		h.opts.Metrics.Applied("success", "api", d)
		writeJSON(w, http.StatusOK, res)
	}
	if n, ok := h.auditSize(); ok {
		h.opts.Metrics.SetAuditEntries(n)
	}
}

// statusFor turns a deadline into 504.
func statusFor(ctx context.Context, def int) int {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return def
}

func (h *handler) auditList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var since time.Time
	if s := q.Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			h.fail(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("since: %q is not an RFC 3339 time (e.g. 2025-01-02T15:04:05Z)", s), nil)
			return
		}
		since = t
	}
	es, err := h.svc.AuditLog(since, q.Get("plugin"))
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, "audit_failed", err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": es})
}

// seq reads the entry number of an audit URL; ok is false when it answered.
func (h *handler) seq(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	n, err := strconv.ParseUint(r.PathValue("n"), 10, 64)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "bad_request", fmt.Sprintf("audit entry %q: expected a sequence number (0, 1, ...)", r.PathValue("n")), nil)
		return 0, false
	}
	return n, true
}

func (h *handler) auditErr(w http.ResponseWriter, r *http.Request, err error) {
	if errkind.Is(err, errkind.NotFound) {
		h.fail(w, r, http.StatusNotFound, "not_found", err.Error(), nil)
		return
	}
	h.fail(w, r, http.StatusInternalServerError, "audit_failed", err.Error(), nil)
}

func (h *handler) auditEntry(w http.ResponseWriter, r *http.Request) {
	n, ok := h.seq(w, r)
	if !ok {
		return
	}
	e, err := h.svc.AuditEntry(n)
	if err != nil {
		h.auditErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// ProofResponse is a receipt for one entry and the key that verifies it.
type ProofResponse struct {
	ledger.Receipt
	// PublicKey is the log's note verifier key. Compare it with a copy
	// obtained out of band before trusting the receipt.
	PublicKey string `json:"public_key"`
}

func (h *handler) auditProof(w http.ResponseWriter, r *http.Request) {
	n, ok := h.seq(w, r)
	if !ok {
		return
	}
	rc, key, err := h.svc.AuditProof(n)
	if err != nil {
		h.auditErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ProofResponse{Receipt: rc, PublicKey: key})
}

func (h *handler) auditSize() (uint64, bool) {
	if h.opts.StateDir == "" {
		return 0, false
	}
	return h.svc.AuditSize()
}
