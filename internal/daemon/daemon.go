// Package daemon keeps a host in line with a desired state document while
// running: it learns of changes from the sources themselves (D-Bus signals
// of systemd, hostname1, timedate1, locale1), re-queries only the plugin
// that changed (debounced, scoped to what the document names), reports
// drift (log, JSON event, metrics, audit log) and, in enforce mode,
// corrects it as a journaled transaction of kind "correction". A slow full
// reconcile is the backstop for changes no signal announces. See
// docs/daemon.md.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/journallog"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Modes.
const (
	ModeReport  = "report"
	ModeEnforce = "enforce"
)

// Listener hears what the daemon sees: change events, drift counts and
// corrections (the API's metrics, the D-Bus service's signals, the search
// index keeper and the query cache listen).
type Listener interface {
	SetDrift(plugin string, n int)
	Event(source string)
	Applied(result, source string, d time.Duration)
}

// Options configure a Daemon.
type Options struct {
	// StatePath is the desired state document (JSON or YAML).
	StatePath string
	// StateDir holds the lock, journal, snapshots and audit log.
	StateDir string
	// Mode is ModeReport (default) or ModeEnforce.
	Mode string
	// User: systemd is the user's manager on the session bus.
	User bool
	// Interval between full reconciles (default 5m).
	Interval time.Duration
	// Debounce is how long events for a plugin gather before it is
	// re-queried (default 50ms).
	Debounce time.Duration
	// FilePoll is how often the state file's mtime is checked (default 2s;
	// negative disables).
	FilePoll time.Duration
	// AuditVerify is how often the whole audit log is re-verified (it is
	// also verified at start; default 1h, negative disables).
	AuditVerify time.Duration
	// MaxFailures: consecutive failed corrections of a plugin before the
	// daemon backs off (default 3).
	MaxFailures int
	// Events receives one JSON object per line per event (nil: none).
	Events io.Writer
	// Log receives one-line messages for people (stderr, the journal).
	Log func(format string, args ...any)
	// Logger, if set, gets the lines with a priority and journal fields
	// (PLUGIN=, OP=, TXN=, AUDIT_SEQ=); Log then defaults to its Printf.
	Logger *journallog.Logger
	// Listener, if set, is told about events, drift and corrections.
	Listener Listener
	// NoWatch turns the watchers off (tests of the loop alone).
	NoWatch bool
}

// Status is the drift the daemon currently sees.
type Status struct {
	Mode      string         `json:"mode"`
	Items     map[string]int `json:"items"`
	LastCheck time.Time      `json:"last_check"`
}

// pluginState is what the daemon remembers of one plugin.
type pluginState struct {
	items     int
	signature string // sorted change lines; "" when in sync
	lastErr   string

	failures     int
	corrections  []time.Time
	backoff      time.Duration
	backoffUntil time.Time
	backoffLog   bool
}

// Daemon watches and reconciles. Create with New, run with Run.
type Daemon struct {
	opts Options
	svc  *control.Service
	eng  *engine.Engine

	mu        sync.Mutex
	doc       *state.Document
	stamp     fileStamp
	plugins   map[string]*pluginState
	lastCheck time.Time

	dirtyMu sync.Mutex
	dirty   map[string]time.Time // plugin → first unhandled event
	kick    chan struct{}
	reload  chan struct{}

	outMu sync.Mutex

	watchers map[string]context.CancelFunc
	wg       sync.WaitGroup
}

// New returns a daemon that corrects and records through svc (its view
// for the daemon: control.Service.As("daemon")).
func New(svc *control.Service, opts Options) (*Daemon, error) {
	if opts.Mode == "" {
		opts.Mode = ModeReport
	}
	if opts.Mode != ModeReport && opts.Mode != ModeEnforce {
		return nil, fmt.Errorf("unknown mode %q (use report or enforce)", opts.Mode)
	}
	if opts.StatePath == "" {
		return nil, errors.New("no state document: pass --state FILE")
	}
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Minute
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.FilePoll == 0 {
		opts.FilePoll = 2 * time.Second
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 3
	}
	if opts.AuditVerify == 0 {
		opts.AuditVerify = time.Hour
	}
	if opts.Log == nil && opts.Logger != nil {
		opts.Log = opts.Logger.Printf
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	return &Daemon{opts: opts, svc: svc, eng: svc.Engine(), plugins: map[string]*pluginState{},
		dirty: map[string]time.Time{}, kick: make(chan struct{}, 1), reload: make(chan struct{}, 1),
		watchers: map[string]context.CancelFunc{}}, nil
}

// Status reports the current drift per plugin of the document.
func (d *Daemon) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Status{Mode: d.opts.Mode, Items: map[string]int{}, LastCheck: d.lastCheck}
	for n, p := range d.plugins {
		st.Items[n] = p.items
	}
	return st
}

// Changed marks a plugin dirty: its live state may have changed. Watchers
// call it for every relevant signal; it never blocks and costs no memory
// beyond one map entry per plugin, however many events arrive.
func (d *Daemon) Changed(pluginName string) {
	if d.opts.Listener != nil {
		d.opts.Listener.Event(pluginName)
	}
	d.dirtyMu.Lock()
	if _, ok := d.dirty[pluginName]; !ok {
		d.dirty[pluginName] = time.Now()
	}
	d.dirtyMu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Reload asks the running daemon to read the state file again (SIGHUP).
func (d *Daemon) Reload() {
	select {
	case d.reload <- struct{}{}:
	default:
	}
}

func (d *Daemon) document() *state.Document {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.doc
}

// Run loads the document, starts the watchers, reconciles once, tells
// systemd it is ready and then serves until ctx ends.
func (d *Daemon) Run(ctx context.Context) error {
	doc, stamp, err := d.load()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.doc, d.stamp = doc, stamp
	d.mu.Unlock()
	d.startWatchers(ctx, doc)
	defer d.stopWatchers()

	d.verifyAudit()
	d.reconcileAll(ctx, "start")
	_, _ = Notify("READY=1\nSTATUS=" + d.statusLine())
	d.emit(map[string]any{"event": "ready", "mode": d.opts.Mode, "document": doc.Hash()})
	d.opts.Log("serving %s in %s mode (%d %s)", d.opts.StatePath, d.opts.Mode, len(doc.Plugins), plural(len(doc.Plugins), "plugin", "plugins"))

	if iv, ok := WatchdogInterval(); ok {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(iv)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					_, _ = Notify("WATCHDOG=1")
				}
			}
		}()
	}

	reconcile := time.NewTicker(d.opts.Interval)
	defer reconcile.Stop()
	var auditCheck <-chan time.Time
	if d.opts.AuditVerify > 0 {
		t := time.NewTicker(d.opts.AuditVerify)
		defer t.Stop()
		auditCheck = t.C
	}
	var poll <-chan time.Time
	if d.opts.FilePoll > 0 {
		t := time.NewTicker(d.opts.FilePoll)
		defer t.Stop()
		poll = t.C
	}
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			_, _ = Notify("STOPPING=1")
			d.opts.Log("stopping")
			return nil
		case <-d.kick:
			if debounce == nil {
				debounce = time.After(d.opts.Debounce)
			}
		case <-debounce:
			debounce = nil
			d.dirtyMu.Lock()
			batch := d.dirty
			d.dirty = map[string]time.Time{}
			d.dirtyMu.Unlock()
			for _, n := range slices.Sorted(maps.Keys(batch)) {
				d.evaluate(ctx, n, batch[n], "event")
			}
		case <-reconcile.C:
			d.reconcileAll(ctx, "reconcile")
		case <-auditCheck:
			d.verifyAudit()
		case <-d.reload:
			d.doReload(ctx, "SIGHUP")
		case <-poll:
			if st, err := statFile(d.opts.StatePath); err == nil {
				d.mu.Lock()
				changed := st != d.stamp
				d.mu.Unlock()
				if changed {
					d.doReload(ctx, "state file changed")
				}
			}
		}
	}
}

// Wait waits for the goroutines Run started after it returned.
func (d *Daemon) Wait() { d.wg.Wait() }

type fileStamp struct {
	mod  time.Time
	size int64
}

func statFile(p string) (fileStamp, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

func (d *Daemon) load() (*state.Document, fileStamp, error) {
	st, _ := statFile(d.opts.StatePath)
	doc, err := d.eng.Load(d.opts.StatePath)
	if err != nil {
		return nil, st, err
	}
	// A document that names no plugins manages nothing: the daemon watches
	// nothing and changes nothing, but its API and D-Bus service still run
	// (a freshly installed package starts cleanly with such a default).
	if len(doc.Plugins) == 0 {
		d.opts.Log("%s names no plugins: nothing is watched or managed", d.opts.StatePath)
	}
	return doc, st, nil
}

func (d *Daemon) doReload(ctx context.Context, why string) {
	_, _ = Notify("RELOADING=1")
	doc, st, err := d.load()
	if err != nil {
		d.mu.Lock()
		d.stamp = st // do not retry the same bad file every poll
		d.mu.Unlock()
		d.opts.Log("reload (%s): %v; kept the old state", why, err)
		d.emit(map[string]any{"event": "reload", "ok": false, "reason": why, "error": err.Error()})
		_, _ = Notify("READY=1\nSTATUS=reload refused: kept the old state")
		return
	}
	d.mu.Lock()
	old := d.doc
	d.doc, d.stamp = doc, st
	for n := range d.plugins {
		if _, ok := doc.Plugins[n]; !ok {
			delete(d.plugins, n)
			if d.opts.Listener != nil {
				d.opts.Listener.SetDrift(n, 0)
			}
		}
	}
	for _, p := range d.plugins {
		p.failures, p.backoff, p.backoffUntil, p.corrections = 0, 0, time.Time{}, nil
	}
	d.mu.Unlock()
	if old == nil || old.Hash() != doc.Hash() {
		d.stopWatchers()
		d.startWatchers(ctx, doc)
	}
	d.opts.Log("reloaded %s (%s)", d.opts.StatePath, why)
	d.emit(map[string]any{"event": "reload", "ok": true, "reason": why, "document": doc.Hash()})
	d.reconcileAll(ctx, "reload")
	_, _ = Notify("READY=1\nSTATUS=" + d.statusLine())
}

func (d *Daemon) reconcileAll(ctx context.Context, why string) {
	doc := d.document()
	now := time.Now()
	for _, n := range slices.Sorted(maps.Keys(doc.Plugins)) {
		d.evaluate(ctx, n, now, why)
	}
}

// evaluate re-queries one plugin, scoped to what the document names, and
// acts on the difference. since is when the first event of this batch
// arrived, for the latency report.
func (d *Daemon) evaluate(ctx context.Context, name string, since time.Time, why string) {
	doc := d.document()
	desired, ok := doc.Plugins[name]
	if !ok {
		return
	}
	sub := &state.Document{Version: doc.Version, Plugins: map[string]any{name: desired}}
	qctx, cancel := context.WithTimeout(ctx, dbusx.DefaultTimeout)
	plan, err := d.eng.Plan(qctx, sub)
	cancel()
	d.mu.Lock()
	d.lastCheck = time.Now()
	ps := d.plugins[name]
	if ps == nil {
		ps = &pluginState{}
		d.plugins[name] = ps
	}
	d.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if ps.lastErr != err.Error() {
			ps.lastErr = err.Error()
			d.logAt(journallog.Err, journallog.Plugin(name), "check %s: %v (will retry on the next event or reconcile)", name, err)
			d.emit(map[string]any{"event": "error", "plugin": name, "error": err.Error()})
		}
		return
	}
	ps.lastErr = ""
	items, lines, sig := driftOf(plan.Ops)
	d.mu.Lock()
	prevItems, prevSig := ps.items, ps.signature
	ps.items, ps.signature = items, sig
	d.mu.Unlock()
	if d.opts.Listener != nil {
		d.opts.Listener.SetDrift(name, items)
	}
	latency := time.Since(since)
	if sig != prevSig {
		if items > 0 {
			for _, l := range lines {
				d.logAt(journallog.Warning, journallog.Plugin(name), "drift: %s: %s", name, l)
			}
			d.emit(map[string]any{"event": "drift", "plugin": name, "items": items, "changes": lines,
				"latency_ms": float64(latency.Microseconds()) / 1000, "trigger": why})
			d.audit(ledger.Entry{Kind: "drift", Plugins: []string{name}, Document: doc.Hash(),
				Before: state.HashOf(plan.Current), Result: "drift",
				Message: fmt.Sprintf("%s: %d %s drifted: %s", name, items, plural(items, "item", "items"), strings.Join(lines, "; ")),
				Extra:   mustJSON(map[string]any{"mode": d.opts.Mode, "items": items, "trigger": why})})
		} else if prevItems > 0 {
			d.logAt(journallog.Info, journallog.Plugin(name), "in sync: %s", name)
			d.emit(map[string]any{"event": "in_sync", "plugin": name, "latency_ms": float64(latency.Microseconds()) / 1000})
			d.audit(ledger.Entry{Kind: "drift", Plugins: []string{name}, Document: doc.Hash(),
				Before: state.HashOf(plan.Current), Result: "resolved", Message: name + ": back in sync"})
		}
	}
	if items > 0 && d.opts.Mode == ModeEnforce {
		d.correct(ctx, name, sub, plan, ps)
	}
}

// driftOf counts the drifted items and renders every changed field. The
// signature names the fields and their desired values but not the current
// ones, so a unit passing through "deactivating" to "inactive" is one drift.
func driftOf(ops []plugin.Op) (int, []string, string) {
	items := map[string]bool{}
	var lines, sig []string
	for _, op := range ops {
		items[op.Item] = true
		if len(op.Changes) == 0 {
			lines = append(lines, op.Item+": needs "+op.Description)
			sig = append(sig, op.ID)
			continue
		}
		for _, c := range op.Changes {
			lines = append(lines, fmt.Sprintf("%s desired %s, current %s", c.Path, plugin.Show(c.Desired), plugin.Show(c.Current)))
			sig = append(sig, c.Path+"="+plugin.Show(c.Desired))
		}
	}
	sort.Strings(lines)
	sort.Strings(sig)
	return len(items), lines, strings.Join(sig, "\n")
}

// Fighting-loop guard: more than this many successful corrections of one
// plugin within correctionWindow means something else keeps undoing them.
const (
	maxCorrections   = 5
	correctionWindow = time.Minute
	maxBackoff       = 10 * time.Minute
	firstBackoff     = 30 * time.Second
)

// correct applies plan as a transaction of kind "correction".
func (d *Daemon) correct(ctx context.Context, name string, sub *state.Document, plan *engine.Plan, ps *pluginState) {
	now := time.Now()
	if now.Before(ps.backoffUntil) {
		if !ps.backoffLog {
			ps.backoffLog = true
			d.logAt(journallog.Warning, journallog.Plugin(name), "enforce: %s: not correcting until %s (backing off)", name, ps.backoffUntil.Format(time.RFC3339))
		}
		return
	}
	ps.backoffLog = false
	start := time.Now()
	cl := &correctionLog{d: d, name: name}
	res, err := d.svc.Transact(ctx, control.Request{Kind: "correction", Client: "op-dbus serve", Doc: sub,
		OnStart: cl.start, Events: cl.event})
	if errkind.Is(err, errkind.Locked) {
		d.logAt(journallog.Info, journallog.Plugin(name), "enforce: %s: correction deferred: %v", name, err)
		return
	}
	if err == nil {
		err = res.Err()
	}
	if res != nil && res.Plan != nil {
		plan = res.Plan
	}
	lf := cl.fields()
	if res != nil && res.Audited {
		lf = lf.With(journallog.FieldAuditSeq, strconv.FormatUint(res.AuditSeq, 10))
	}
	dur := time.Since(start)
	result, backoffWhy := "success", ""
	ev := map[string]any{"event": "correction", "plugin": name, "ops": len(plan.Ops), "duration_ms": dur.Milliseconds()}
	if err != nil {
		result = "failed"
		ps.failures++
		ev["error"] = err.Error()
		d.logAt(journallog.Err, lf, "enforce: %s: correction failed (%d in a row): %v", name, ps.failures, err)
		if ps.failures >= d.opts.MaxFailures {
			backoffWhy = fmt.Sprintf("%d failed corrections in a row", ps.failures)
		}
	} else {
		ps.failures = 0
		ps.corrections = append(ps.corrections, now)
		keep := ps.corrections[:0]
		for _, t := range ps.corrections {
			if now.Sub(t) < correctionWindow {
				keep = append(keep, t)
			}
		}
		ps.corrections = keep
		d.logAt(journallog.Info, lf, "enforce: %s: corrected %d %s", name, len(plan.Ops), plural(len(plan.Ops), "op", "ops"))
		if len(ps.corrections) >= maxCorrections {
			backoffWhy = fmt.Sprintf("%d corrections within %s: something keeps undoing them", len(ps.corrections), correctionWindow)
			ps.corrections = nil
		} else {
			ps.backoff = 0
		}
	}
	ev["result"] = result
	d.emit(ev)
	if d.opts.Listener != nil {
		d.opts.Listener.Applied(result, "daemon", dur)
	}
	if backoffWhy != "" {
		d.backOff(name, ps, backoffWhy)
	}
	// Check again once the dust settles; the signals of our own change
	// usually do this already.
	d.Changed(name)
}

func (d *Daemon) backOff(name string, ps *pluginState, why string) {
	if ps.backoff == 0 {
		ps.backoff = firstBackoff
	} else {
		ps.backoff = min(2*ps.backoff, maxBackoff)
	}
	ps.backoffUntil = time.Now().Add(ps.backoff)
	d.logAt(journallog.Warning, journallog.Plugin(name), "enforce: %s: %s; backing off for %s (drift is still reported)", name, why, ps.backoff)
	d.emit(map[string]any{"event": "backoff", "plugin": name, "reason": why, "seconds": ps.backoff.Seconds()})
}

// verifyAudit re-verifies the whole audit log. Damage is reported (log,
// event); the service then refuses every change until a person looks.
func (d *Daemon) verifyAudit() {
	if err := d.svc.VerifyAuditLog(); err != nil {
		d.logAt(journallog.Err, nil, "audit log: %v; no change will be applied until it is looked at (op-dbus audit verify)", err)
		d.emit(map[string]any{"event": "audit_damaged", "error": err.Error()})
		return
	}
	d.emit(map[string]any{"event": "audit_verified"})
}

// audit appends one entry through the service, best effort.
func (d *Daemon) audit(e ledger.Entry) {
	e.Actor = ledger.LocalActor("op-dbus serve")
	d.svc.Note(e)
}

func (d *Daemon) statusLine() string {
	st := d.Status()
	n := 0
	for _, v := range st.Items {
		n += v
	}
	return fmt.Sprintf("%s mode, %d drifted %s", st.Mode, n, plural(n, "item", "items"))
}

// emit writes one JSON event line.
func (d *Daemon) emit(ev map[string]any) {
	if d.opts.Events == nil {
		return
	}
	ev["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	d.outMu.Lock()
	defer d.outMu.Unlock()
	_, _ = d.opts.Events.Write(append(b, '\n'))
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
