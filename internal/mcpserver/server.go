// Package mcpserver exposes op-dbus's control layer as a Model Context
// Protocol server: tools that read the host (query, plan, verify, audit,
// snapshots, history, bus introspection), resources with the live state, and
// — only when the operator allowed it — a tool that applies a plan the same
// server produced, always under the confirm timer.
//
// Every answer comes from the host through internal/control; nothing is
// invented.
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/netcheck"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/strictjson"
)

// DefaultConfirmWithin is how long an apply made through MCP waits for
// `op-dbus commit` before it rolls everything back.
const DefaultConfirmWithin = 120 * time.Second

// Options configure a server.
type Options struct {
	// AllowApply registers the apply tool. Without it the server is
	// read-only: apply is not listed and calling it is an unknown tool.
	AllowApply bool
	// ConfirmWithin is the confirm timer every apply uses; zero or less
	// means DefaultConfirmWithin. There is no way to apply without it.
	ConfirmWithin time.Duration
	// Version is reported to clients in serverInfo.
	Version string
}

// Server is an MCP server over one control.Service.
type Server struct {
	svc  *control.Service
	opts Options
	mcp  *mcp.Server
}

// New builds the server. The caller owns svc and closes it after the server
// stopped.
func New(svc *control.Service, opts Options) *Server {
	if opts.ConfirmWithin <= 0 {
		opts.ConfirmWithin = DefaultConfirmWithin
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	s := &Server{svc: svc, opts: opts}
	instr := "op-dbus: the host as one declarative state document. " +
		"Read with query_state (or the opdbus://state resources), propose a change with plan " +
		"(it returns a plan_hash and the ops), check with verify. "
	if opts.AllowApply {
		instr += fmt.Sprintf("apply takes only a plan_hash from plan in this session's server; "+
			"every apply is rolled back after %s unless the operator runs `op-dbus commit`.", opts.ConfirmWithin)
	} else {
		instr += "This server is read-only (started without --allow-apply)."
	}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "op-dbus", Title: "op-dbus", Version: opts.Version},
		&mcp.ServerOptions{Instructions: instr})
	s.addTools()
	s.addResources()
	return s
}

// MCP returns the underlying SDK server (for Connect with other transports).
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves one client over t until it disconnects or ctx is done.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	return s.mcp.Run(ctx, t)
}

// ---- inputs and outputs ----

// QueryInput selects plugins.
type QueryInput struct {
	Plugins []string `json:"plugins,omitempty" jsonschema:"plugin names to read (e.g. hostname, timedate, locale, systemd); all available plugins when empty"`
}

// QueryOutput is a state document of the live host, plus the plugins whose
// service is absent here (unavailable) and those that failed (errors).
type QueryOutput struct {
	Version     int               `json:"version"`
	Plugins     map[string]any    `json:"plugins"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Errors      map[string]string `json:"errors,omitempty"`
}

// DocumentInput carries a desired state document.
type DocumentInput struct {
	Document any `json:"document" jsonschema:"the desired state document: a JSON object {\"version\": 1, \"plugins\": {...}}, or the same as a JSON or YAML string. It is partial: only what it names is managed"`
}

// PlanOutput is the plan for a document.
type PlanOutput struct {
	PlanHash     string      `json:"plan_hash" jsonschema:"pass this to apply (only accepted by the server that planned it)"`
	DocumentHash string      `json:"document_hash"`
	InSync       bool        `json:"in_sync"`
	Ops          []plugin.Op `json:"ops"`
}

// VerifyOutput says whether the host matches a document.
type VerifyOutput struct {
	OK         bool              `json:"ok"`
	Mismatches []engine.Mismatch `json:"mismatches,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// ApplyInput names a plan.
type ApplyInput struct {
	PlanHash string `json:"plan_hash" jsonschema:"the plan_hash returned by plan in this server"`
}

// IntrospectInput selects a bus and services.
type IntrospectInput struct {
	Bus      string   `json:"bus,omitempty" jsonschema:"system (default), session, or a D-Bus address"`
	Services []string `json:"services" jsonschema:"well-known service names to walk, e.g. org.freedesktop.hostname1 (at least one)"`
}

// AuditLogInput filters the audit log.
type AuditLogInput struct {
	Since  string `json:"since,omitempty" jsonschema:"only entries at or after this time: RFC 3339 (2025-01-02T15:04:05Z) or a duration back from now (24h)"`
	Plugin string `json:"plugin,omitempty" jsonschema:"only entries that touched this plugin"`
	Limit  int    `json:"limit,omitempty" jsonschema:"at most this many entries, the newest (default 100, at most 1000)"`
}

// EntriesOutput is a list of audit log entries.
type EntriesOutput struct {
	Entries []ledger.Entry `json:"entries"`
	Total   int            `json:"total" jsonschema:"entries that matched before the limit"`
}

// HistoryInput names a plugin.
type HistoryInput struct {
	Plugin string `json:"plugin,omitempty" jsonschema:"only changes to this plugin; all when empty"`
	Limit  int    `json:"limit,omitempty" jsonschema:"at most this many entries, the newest (default 100, at most 1000)"`
}

// SnapshotsOutput lists snapshots.
type SnapshotsOutput struct {
	Snapshots []snapshot.Snapshot `json:"snapshots"`
}

// Empty is the input of tools without arguments.
type Empty struct{}

// schemaTypes overrides what schema inference gets wrong for our types:
// json.RawMessage (an op's machine form, a ledger entry's extra) holds any
// JSON value, not an array of bytes.
var schemaTypes = map[reflect.Type]*jsonschema.Schema{
	reflect.TypeFor[json.RawMessage](): {},
}

// addTool is mcp.AddTool with the output schema inferred with schemaTypes.
func addTool[In, Out any](s *mcp.Server, t *mcp.Tool, h mcp.ToolHandlerFor[In, *Out]) {
	sch, err := jsonschema.For[Out](&jsonschema.ForOptions{TypeSchemas: schemaTypes})
	if err != nil {
		panic(fmt.Sprintf("tool %s: output schema: %v", t.Name, err))
	}
	t.OutputSchema = sch
	mcp.AddTool(s, t, strictArgs(h))
}

// strictArgs checks a call's raw arguments with internal/strictjson, the
// decoder every request body shares, before the handler sees them: the SDK
// decodes them with the last of two equal keys winning, at any depth (a
// document given as an object, too). A refusal is a tool error that names
// the key: `invalid arguments: plan_hash: duplicate key`.
func strictArgs[In, Out any](h mcp.ToolHandlerFor[In, Out]) mcp.ToolHandlerFor[In, Out] {
	return func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, Out, error) {
		if req != nil && req.Params != nil && len(req.Params.Arguments) > 0 {
			if err := strictjson.Decode(req.Params.Arguments, new(In)); err != nil {
				var zero Out
				return nil, zero, fmt.Errorf("invalid arguments: %w", err)
			}
		}
		return h(ctx, req, in)
	}
}

func readOnly() *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: new(false)}
}

func (s *Server) addTools() {
	addTool(s.mcp, &mcp.Tool{
		Name:        "query_state",
		Title:       "Query the live state",
		Description: "Read the live state of the host as an op-dbus state document (the same as `op-dbus query -o json`). Plugins that cannot be read are listed under errors.",
		Annotations: readOnly(),
	}, s.queryState)
	addTool(s.mcp, &mcp.Tool{
		Name:        "introspect_bus",
		Title:       "Introspect D-Bus services",
		Description: "Walk D-Bus services on a bus: object tree, interfaces, members and property values (like `op-dbus introspect -o json`).",
		Annotations: readOnly(),
	}, s.introspectBus)
	addTool(s.mcp, &mcp.Tool{
		Name:  "plan",
		Title: "Plan a desired state",
		Description: "Compare a desired state document with the live host and return the ops that would make it so, with a plan_hash. " +
			"Nothing is changed. in_sync is true when there is nothing to do.",
		Annotations: readOnly(),
	}, s.plan)
	addTool(s.mcp, &mcp.Tool{
		Name:        "verify",
		Title:       "Verify the host against a document",
		Description: "Check whether the live host matches a desired state document; mismatches name each field, desired vs current. Nothing is changed.",
		Annotations: readOnly(),
	}, s.verify)
	addTool(s.mcp, &mcp.Tool{
		Name:        "audit_log",
		Title:       "Read the audit log",
		Description: "Entries of op-dbus's tamper-evident audit log: every apply, rollback, restore and refusal, with who did it.",
		Annotations: readOnly(),
	}, s.auditLog)
	addTool(s.mcp, &mcp.Tool{
		Name:        "audit_verify",
		Title:       "Verify the audit log",
		Description: "Recompute the audit log's Merkle tree and check its signed checkpoints; ok is false when anything was edited.",
		Annotations: readOnly(),
	}, s.auditVerify)
	addTool(s.mcp, &mcp.Tool{
		Name:        "snapshot_list",
		Title:       "List snapshots",
		Description: "The state snapshots op-dbus took (before every apply, and manual ones).",
		Annotations: readOnly(),
	}, s.snapshotList)
	addTool(s.mcp, &mcp.Tool{
		Name:        "history",
		Title:       "Change history",
		Description: "The audit log entries that changed the host, optionally for one plugin.",
		Annotations: readOnly(),
	}, s.history)
	addTool(s.mcp, &mcp.Tool{
		Name:  "check_network",
		Title: "Cross-check the network",
		Description: "What netlink, NetworkManager, OVSDB and /sys/class/net each say about every interface (existence, state, MTU, addresses, bridge membership), " +
			"and every field on which they disagree, with each source's value (the same as `op-dbus check network -o json`). Sources that are not running are listed as not consulted.",
		Annotations: readOnly(),
	}, s.checkNetwork)
	s.addSearchTool()
	if s.opts.AllowApply {
		addTool(s.mcp, &mcp.Tool{
			Name:  "apply",
			Title: "Apply a plan (confirm timer)",
			Description: fmt.Sprintf("Apply a plan returned by plan in this server, by its plan_hash. Refused when the live state changed since planning. "+
				"The result is verified; then everything is rolled back after %s unless the operator runs `op-dbus commit` on the host. "+
				"Recorded in the audit log with this client's name.", s.opts.ConfirmWithin),
			Annotations: &mcp.ToolAnnotations{DestructiveHint: new(true), OpenWorldHint: new(false)},
		}, s.apply)
	}
}

func (s *Server) queryState(ctx context.Context, _ *mcp.CallToolRequest, in QueryInput) (*mcp.CallToolResult, *QueryOutput, error) {
	r, err := s.svc.Query(ctx, in.Plugins)
	if err != nil {
		return nil, nil, err
	}
	out := &QueryOutput{Version: r.Version, Plugins: r.Plugins, Unavailable: r.Unavailable, Errors: r.Errors}
	if out.Plugins == nil {
		out.Plugins = map[string]any{}
	}
	return nil, out, nil
}

func (s *Server) introspectBus(ctx context.Context, _ *mcp.CallToolRequest, in IntrospectInput) (*mcp.CallToolResult, *introspect.Result, error) {
	if len(in.Services) == 0 {
		return nil, nil, errors.New("services: name at least one service (walking a whole bus is too large for one answer; use `op-dbus introspect` for that)")
	}
	bus := in.Bus
	if bus == "" {
		bus = "system"
	}
	r, err := s.svc.Introspect(ctx, bus, in.Services)
	if err != nil {
		return nil, nil, err
	}
	return nil, r, nil
}

// decodeDocument turns the document argument (object or string) into a
// validated document.
func (s *Server) decodeDocument(v any) (*state.Document, error) {
	var data []byte
	switch d := v.(type) {
	case string:
		data = []byte(d)
	case map[string]any:
		b, err := json.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("document: %w", err)
		}
		data = b
	case nil:
		return nil, errors.New(`document: missing (give a state document such as {"version": 1, "plugins": {"hostname": {"location": "rack 7"}}})`)
	default:
		return nil, fmt.Errorf("document: want a JSON object or a JSON/YAML string, got %T", v)
	}
	doc, err := s.svc.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("document: %w", err)
	}
	return doc, nil
}

func (s *Server) plan(ctx context.Context, _ *mcp.CallToolRequest, in DocumentInput) (*mcp.CallToolResult, *PlanOutput, error) {
	doc, err := s.decodeDocument(in.Document)
	if err != nil {
		return nil, nil, err
	}
	p, err := s.svc.Plan(ctx, doc)
	if err != nil {
		return nil, nil, err
	}
	out := &PlanOutput{PlanHash: p.PlanHash, DocumentHash: p.DocumentHash, InSync: p.InSync, Ops: p.Ops}
	if out.Ops == nil {
		out.Ops = []plugin.Op{}
	}
	return nil, out, nil
}

func (s *Server) verify(ctx context.Context, _ *mcp.CallToolRequest, in DocumentInput) (*mcp.CallToolResult, *VerifyOutput, error) {
	doc, err := s.decodeDocument(in.Document)
	if err != nil {
		return nil, nil, err
	}
	v, err := s.svc.Verify(ctx, doc)
	if err != nil {
		return nil, nil, err
	}
	return nil, &VerifyOutput{OK: v.OK, Mismatches: v.Mismatches, Error: v.Error}, nil
}

// ClientIdentity is the client's name/version from initialize, as recorded
// in the audit log.
func ClientIdentity(ss *mcp.ServerSession) string {
	if ss == nil {
		return "mcp:unknown"
	}
	p := ss.InitializeParams()
	if p == nil || p.ClientInfo == nil || p.ClientInfo.Name == "" {
		return "mcp:unknown"
	}
	id := "mcp:" + p.ClientInfo.Name
	if p.ClientInfo.Version != "" {
		id += "/" + p.ClientInfo.Version
	}
	return id
}

func (s *Server) apply(ctx context.Context, req *mcp.CallToolRequest, in ApplyInput) (*mcp.CallToolResult, *control.ApplyResult, error) {
	if strings.TrimSpace(in.PlanHash) == "" {
		return nil, nil, errors.New("plan_hash: empty (call plan first and pass its plan_hash)")
	}
	r, err := s.svc.Apply(ctx, in.PlanHash, ClientIdentity(req.Session), s.opts.ConfirmWithin)
	if err != nil {
		switch errkind.Of(err) {
		case errkind.UnknownPlan:
			return nil, nil, fmt.Errorf("refused (%s): %w (plan_hash must come from plan in this server; plan again)", errkind.Code(err), err)
		case errkind.StalePlan:
			return nil, nil, fmt.Errorf("refused (%s): %w (the live state changed since planning; plan again)", errkind.Code(err), err)
		case errkind.Locked, errkind.Unsupported:
			return nil, nil, fmt.Errorf("refused (%s): %w", errkind.Code(err), err)
		}
		return nil, nil, err
	}
	return nil, r, nil
}

func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("since: %q is neither an RFC 3339 time (2025-01-02T15:04:05Z) nor a duration (24h)", s)
}

func limitEntries(es []ledger.Entry, limit int) (*EntriesOutput, error) {
	switch {
	case limit < 0:
		return nil, fmt.Errorf("limit: %d is negative", limit)
	case limit == 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	out := &EntriesOutput{Total: len(es), Entries: es}
	if len(es) > limit {
		out.Entries = es[len(es)-limit:]
	}
	if out.Entries == nil {
		out.Entries = []ledger.Entry{}
	}
	return out, nil
}

func (s *Server) auditLog(_ context.Context, _ *mcp.CallToolRequest, in AuditLogInput) (*mcp.CallToolResult, *EntriesOutput, error) {
	since, err := parseSince(in.Since, time.Now())
	if err != nil {
		return nil, nil, err
	}
	es, err := s.svc.AuditLog(since, in.Plugin)
	if err != nil {
		return nil, nil, err
	}
	out, err := limitEntries(es, in.Limit)
	return nil, out, err
}

func (s *Server) auditVerify(_ context.Context, _ *mcp.CallToolRequest, _ Empty) (*mcp.CallToolResult, *ledger.VerifyReport, error) {
	r, err := s.svc.AuditVerify()
	if err != nil {
		return nil, nil, err
	}
	return nil, &r, nil
}

func (s *Server) checkNetwork(ctx context.Context, _ *mcp.CallToolRequest, _ Empty) (*mcp.CallToolResult, *netcheck.Report, error) {
	rep, err := s.svc.CheckNetwork(ctx)
	if err != nil {
		return nil, nil, err
	}
	return nil, rep, nil
}

func (s *Server) snapshotList(_ context.Context, _ *mcp.CallToolRequest, _ Empty) (*mcp.CallToolResult, *SnapshotsOutput, error) {
	ss, err := s.svc.Snapshots()
	if err != nil {
		return nil, nil, err
	}
	if ss == nil {
		ss = []snapshot.Snapshot{}
	}
	return nil, &SnapshotsOutput{Snapshots: ss}, nil
}

func (s *Server) history(_ context.Context, _ *mcp.CallToolRequest, in HistoryInput) (*mcp.CallToolResult, *EntriesOutput, error) {
	es, err := s.svc.History(in.Plugin)
	if err != nil {
		return nil, nil, err
	}
	out, err := limitEntries(es, in.Limit)
	return nil, out, err
}

// ---- resources ----

// StateURI is the resource with the whole live state.
const StateURI = "opdbus://state"

func (s *Server) addResources() {
	s.mcp.AddResource(&mcp.Resource{
		URI:         StateURI,
		Name:        "state",
		Title:       "Live state of the host",
		Description: "The whole live state as an op-dbus state document (JSON), as `op-dbus query` prints it.",
		MIMEType:    "application/json",
	}, s.readState)
	s.mcp.AddResourceTemplate(&mcp.ResourceTemplate{
		URITemplate: StateURI + "/{plugin}",
		Name:        "plugin-state",
		Title:       "Live state of one plugin",
		Description: "One plugin's live state (JSON), e.g. opdbus://state/hostname.",
		MIMEType:    "application/json",
	}, s.readState)
}

func (s *Server) readState(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	var v any
	if uri == StateURI {
		r, err := s.svc.Query(ctx, nil)
		if err != nil {
			return nil, err
		}
		v = r
	} else {
		name, ok := strings.CutPrefix(uri, StateURI+"/")
		if !ok || name == "" || strings.Contains(name, "/") {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		r, err := s.svc.Query(ctx, []string{name})
		if errkind.Is(err, errkind.UnknownPlugin) {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		if err != nil {
			return nil, err
		}
		if err := r.Failure(name); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		st, ok := r.Plugins[name]
		if !ok {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		v = st
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
}
