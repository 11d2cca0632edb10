// Package control is what every long-running front end of op-dbus offers
// (the MCP server, and later the HTTP API and the D-Bus service): query,
// plan with a plan hash, apply only a plan this server made and only while
// the live state still matches it, verify, and read the audit log and
// snapshots. Every apply is a journaled transaction recorded in the audit
// log with the client's identity; every refused apply is recorded too.
package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/netcheck"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// Options configure a Service.
type Options struct {
	StateDir string
	// User points the systemd plugin at the session bus.
	User bool
	// OVSDB is the ovsdb-server address for the ovs plugin (see plugin.Options).
	OVSDB string
	// Source is recorded in the audit log: "mcp", "api", "dbus".
	Source string
	// QueryCacheTTL, when set, serves Query from results at most this old.
	// The daemon sets it and calls Invalidate for every change signal, so
	// the cache is exact for what it watches and at most this stale for
	// the rest; plan and apply always read live.
	QueryCacheTTL time.Duration
}

// Errors an apply can be refused with.
var (
	ErrUnknownPlan = errors.New("unknown plan hash: apply accepts only a plan made by this server (call plan first)")
	ErrStalePlan   = errors.New("stale plan: the live state changed since the plan was made; plan again")
)

// Service holds the engine and the plans this server has handed out.
type Service struct {
	opts    Options
	plugins []plugin.Plugin
	engine  *engine.Engine

	mu    sync.Mutex
	plans map[string]*storedPlan

	cacheMu sync.Mutex
	cache   map[string]*cachedQuery
}

type cachedQuery struct {
	once sync.Once // one live query per entry, however many readers wait
	at   time.Time
	r    engine.QueryResult
}

type storedPlan struct {
	doc     *state.Document
	created time.Time
}

// New builds every registered plugin.
func New(opts Options) *Service {
	if opts.Source == "" {
		opts.Source = "api"
	}
	ps := plugin.New(plugin.Options{User: opts.User, StateDir: opts.StateDir, OVSDB: opts.OVSDB})
	return &Service{opts: opts, plugins: ps, engine: engine.New(ps), plans: map[string]*storedPlan{}, cache: map[string]*cachedQuery{}}
}

// StateDir is the state directory this service works in.
func (s *Service) StateDir() string { return s.opts.StateDir }

// Close releases the plugins' connections.
func (s *Service) Close() error {
	for _, p := range s.plugins {
		if c, ok := p.(plugin.Closer); ok {
			_ = c.Close()
		}
	}
	return nil
}

// PluginStatus is one plugin and whether it works here.
type PluginStatus struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// Plugins reports each plugin's availability.
func (s *Service) Plugins(ctx context.Context) []PluginStatus {
	out := make([]PluginStatus, len(s.plugins))
	var wg sync.WaitGroup
	for i, p := range s.plugins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := PluginStatus{Name: p.Name(), Available: true}
			if err := p.Available(ctx); err != nil {
				st.Available, st.Reason = false, err.Error()
			}
			out[i] = st
		}()
	}
	wg.Wait()
	return out
}

// QueryResult is a state document plus the plugins that could not be read.
type QueryResult struct {
	Version int               `json:"version"`
	Plugins map[string]any    `json:"plugins"`
	Errors  map[string]string `json:"errors,omitempty"`
}

// Query reads the named plugins (all when empty).
func (s *Service) Query(ctx context.Context, plugins []string) (*QueryResult, error) {
	for _, n := range plugins {
		if _, ok := s.engine.Plugin(n); !ok {
			return nil, fmt.Errorf("unknown plugin %q (known: %v)", n, s.engine.Names())
		}
	}
	res := s.query(ctx, plugins)
	out := &QueryResult{Version: state.Version, Plugins: map[string]any{}}
	for n, r := range res {
		if r.Err != nil {
			if out.Errors == nil {
				out.Errors = map[string]string{}
			}
			out.Errors[n] = r.Err.Error()
			continue
		}
		out.Plugins[n] = r.State
	}
	return out, nil
}

// Invalidate drops cached query results of the named plugins (all when
// none are named).
func (s *Service) Invalidate(plugins ...string) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if len(plugins) == 0 {
		s.cache = map[string]*cachedQuery{}
		return
	}
	for _, p := range plugins {
		delete(s.cache, p)
	}
}

func (s *Service) query(ctx context.Context, plugins []string) map[string]engine.QueryResult {
	if s.opts.QueryCacheTTL <= 0 {
		return s.engine.Query(ctx, plugins)
	}
	if len(plugins) == 0 {
		plugins = s.engine.Names()
	}
	out := make(map[string]engine.QueryResult, len(plugins))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range plugins {
		s.cacheMu.Lock()
		c := s.cache[n]
		if c != nil && !c.at.IsZero() && time.Since(c.at) > s.opts.QueryCacheTTL {
			c = nil
		}
		if c == nil {
			c = &cachedQuery{}
			s.cache[n] = c
		}
		s.cacheMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.once.Do(func() {
				// Detached from one reader's context: others share it.
				qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dbusx.DefaultTimeout)
				defer cancel()
				c.r = s.engine.Query(qctx, []string{n})[n]
				s.cacheMu.Lock()
				c.at = time.Now()
				s.cacheMu.Unlock()
			})
			mu.Lock()
			out[n] = c.r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Decode strictly decodes a state document (JSON or YAML).
func (s *Service) Decode(data []byte) (*state.Document, error) {
	if len(data) > state.MaxSize {
		return nil, fmt.Errorf("state document larger than the %d MiB limit", state.MaxSize>>20)
	}
	return state.Decode(data, state.FormatAuto, s.engine.Types(), s.engine.Validate)
}

// PlanResult is a plan and the hash that names it.
type PlanResult struct {
	PlanHash     string      `json:"plan_hash"`
	DocumentHash string      `json:"document_hash"`
	InSync       bool        `json:"in_sync"`
	Ops          []plugin.Op `json:"ops"`
}

// Plan plans doc against the live state and remembers it under its hash:
// SHA-256 over the document's hash, the live state it was planned against
// and the ops, so the same hash means the same change from the same state.
func (s *Service) Plan(ctx context.Context, doc *state.Document) (*PlanResult, error) {
	p, err := s.engine.Plan(ctx, doc)
	if err != nil {
		return nil, err
	}
	h := hashPlan(doc, p)
	s.mu.Lock()
	s.plans[h] = &storedPlan{doc: doc, created: time.Now()}
	s.mu.Unlock()
	ops := p.Ops
	if ops == nil {
		ops = []plugin.Op{}
	}
	return &PlanResult{PlanHash: h, DocumentHash: doc.Hash(), InSync: p.Empty(), Ops: ops}, nil
}

func hashPlan(doc *state.Document, p *engine.Plan) string {
	ops, _ := json.Marshal(p.Ops)
	sum := sha256.New()
	fmt.Fprintf(sum, "op-dbus plan v1\n%s\n%s\n", doc.Hash(), state.HashOf(p.Current))
	sum.Write(ops)
	return "sha256:" + hex.EncodeToString(sum.Sum(nil))
}

// Verify lists every field that differs from doc.
func (s *Service) Verify(ctx context.Context, doc *state.Document) (engine.Verification, error) {
	v := s.engine.Verify(ctx, doc)
	if v.Error != "" {
		return v, errors.New(v.Error)
	}
	return v, nil
}

// ApplyResult is the outcome of an apply.
type ApplyResult struct {
	Success  bool                   `json:"success"`
	Outcomes []engine.Outcome       `json:"outcomes"`
	Verify   engine.Verification    `json:"verify"`
	Rollback *engine.RollbackResult `json:"rollback,omitempty"`
	Snapshot string                 `json:"snapshot,omitempty"`
	// AwaitingConfirm: the change is applied and verified, and is rolled
	// back unless `op-dbus commit` runs before Deadline.
	AwaitingConfirm bool      `json:"awaiting_confirm,omitempty"`
	Deadline        time.Time `json:"deadline,omitempty"`
	Error           string    `json:"error,omitempty"`
}

// Apply carries out a plan this server made, as a transaction, if the live
// state still produces the same plan. client names who asked (the MCP
// client, the API token's name) for the audit log.
func (s *Service) Apply(ctx context.Context, planHash, client string, confirmWithin time.Duration) (*ApplyResult, error) {
	s.mu.Lock()
	sp := s.plans[planHash]
	s.mu.Unlock()
	if sp == nil {
		s.refuse(client, "apply of plan "+planHash+": "+ErrUnknownPlan.Error())
		return nil, ErrUnknownPlan
	}
	unlock, err := txn.Lock(s.opts.StateDir)
	if err != nil {
		s.refuse(client, err.Error())
		return nil, err
	}
	m, closeM, err := s.manager(client)
	if err != nil {
		unlock()
		return nil, err
	}
	release := func() { closeM(); unlock() }
	if _, err := m.Recover(ctx); err != nil {
		release()
		s.refuse(client, err.Error())
		return nil, err
	}
	p, err := s.engine.Plan(ctx, sp.doc)
	if err != nil {
		release()
		return nil, err
	}
	if hashPlan(sp.doc, p) != planHash {
		release()
		s.refuse(client, "apply of plan "+planHash+": "+ErrStalePlan.Error())
		return nil, ErrStalePlan
	}
	s.mu.Lock()
	delete(s.plans, planHash) // a plan is applied once
	s.mu.Unlock()

	type done struct {
		out *txn.Outcome
		err error
	}
	waiting := make(chan time.Time, 1)
	finished := make(chan done, 1)
	// The transaction outlives this call when it waits for confirmation,
	// so it must not die with the caller's context.
	tctx := context.WithoutCancel(ctx)
	go func() {
		defer release()
		out, err := m.Apply(tctx, sp.doc, p, txn.Options{Kind: "apply", ConfirmWithin: confirmWithin,
			OnWait: func(deadline time.Time) { waiting <- deadline }})
		finished <- done{out, err}
	}()
	// Whatever the outcome, the cached state is no longer trustworthy.
	defer s.Invalidate()
	select {
	case deadline := <-waiting:
		return &ApplyResult{Success: true, AwaitingConfirm: true, Deadline: deadline, Verify: engine.Verification{OK: true}}, nil
	case d := <-finished:
		if d.out == nil {
			return nil, d.err
		}
		r := &ApplyResult{Success: d.out.Err() == nil && d.err == nil, Snapshot: d.out.Snapshot}
		if res := d.out.Result; res != nil {
			r.Outcomes, r.Verify, r.Rollback = res.Outcomes, res.Verify, res.Rollback
		}
		if e := firstErr(d.err, d.out.Err()); e != nil {
			r.Error = e.Error()
		}
		return r, nil
	}
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func (s *Service) auditDir() string { return filepath.Join(s.opts.StateDir, "audit") }

// manager opens the transaction manager with the audit log.
func (s *Service) manager(client string) (*txn.Manager, func(), error) {
	snaps, err := snapshot.Open(filepath.Join(s.opts.StateDir, "snapshots"))
	if err != nil {
		return nil, nil, err
	}
	log, err := ledger.Open(s.auditDir())
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w (nothing is changed that cannot be recorded)", err)
	}
	if err := log.Corrupt(); err != nil {
		log.Close()
		return nil, nil, err
	}
	m := &txn.Manager{Dir: s.opts.StateDir, Engine: s.engine, Snapshots: snaps, Keep: 200,
		Recorder: &txn.LedgerRecorder{Log: log, Source: s.opts.Source, Client: client}}
	return m, func() { log.Close() }, nil
}

// refuse records a refused write, best effort.
func (s *Service) refuse(client, message string) {
	if err := os.MkdirAll(s.opts.StateDir, 0o700); err != nil {
		return
	}
	l, err := ledger.Open(s.auditDir())
	if err != nil {
		return
	}
	defer l.Close()
	_, _ = l.Append(ledger.Entry{Time: time.Now().UTC(), Kind: "apply", Source: s.opts.Source, Actor: ledger.LocalActor(client), Result: "refused", Message: message})
}

// AuditLog lists audit entries at or after since, touching plugin if set.
func (s *Service) AuditLog(since time.Time, pluginName string) ([]ledger.Entry, error) {
	return s.entries(func(e ledger.Entry) bool {
		return !e.Time.Before(since) && (pluginName == "" || slices.Contains(e.Plugins, pluginName))
	})
}

// History lists the changes (not refusals), touching plugin if set.
func (s *Service) History(pluginName string) ([]ledger.Entry, error) {
	return s.entries(func(e ledger.Entry) bool {
		return e.Result != "refused" && (pluginName == "" || slices.Contains(e.Plugins, pluginName))
	})
}

func (s *Service) entries(keep func(ledger.Entry) bool) ([]ledger.Entry, error) {
	if _, err := os.Stat(filepath.Join(s.auditDir(), "entries")); err != nil {
		return []ledger.Entry{}, nil
	}
	l, err := ledger.Open(s.auditDir())
	if err != nil {
		return nil, err
	}
	defer l.Close()
	es, err := l.Entries(0, keep)
	if es == nil {
		es = []ledger.Entry{}
	}
	return es, err
}

// AuditVerify checks the whole log.
func (s *Service) AuditVerify() (ledger.VerifyReport, error) {
	if _, err := os.Stat(filepath.Join(s.auditDir(), "entries")); err != nil {
		return ledger.VerifyReport{}, fmt.Errorf("no audit log in %s yet", s.auditDir())
	}
	l, err := ledger.Open(s.auditDir())
	if err != nil {
		return ledger.VerifyReport{}, err
	}
	defer l.Close()
	return l.Verify()
}

// Snapshots lists the stored snapshots, oldest first.
func (s *Service) Snapshots() ([]snapshot.Snapshot, error) {
	st, err := snapshot.Open(filepath.Join(s.opts.StateDir, "snapshots"))
	if err != nil {
		return nil, err
	}
	l, err := st.List()
	if l == nil {
		l = []snapshot.Snapshot{}
	}
	return l, err
}

// CheckNetwork compares what netlink, NetworkManager, OVSDB and
// /sys/class/net say about every interface (op-dbus check network).
func (s *Service) CheckNetwork(ctx context.Context) (*netcheck.Report, error) {
	return netcheck.Check(ctx, netcheck.Inputs(ctx, s.engine.Plugin))
}

// Introspect walks a bus ("system", "session" or an address).
func (s *Service) Introspect(ctx context.Context, bus string, services []string) (*introspect.Result, error) {
	if bus == "" {
		bus = "system"
	}
	for _, n := range services {
		if !introspect.ValidBusName(n) {
			return nil, fmt.Errorf("%q is not a valid bus name", n)
		}
	}
	conn, err := dbusx.Open(ctx, dbusx.Bus(bus))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w := &introspect.Walker{Conn: conn, Bus: bus, Services: services}
	return w.Walk(ctx)
}
