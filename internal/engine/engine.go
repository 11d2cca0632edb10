// Package engine turns a desired state document into verified changes:
// query (plugins in parallel) → plan → apply in dependency order → query and
// plan again to verify → roll back what the transaction touched on failure.
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Engine drives a set of plugins.
type Engine struct {
	plugins map[string]plugin.Plugin
	// Parallel bounds how many independent ops run at once.
	Parallel int
	// VerifyAttempts is how many times verification re-queries before it
	// reports a mismatch; some backends settle a moment after a call returns.
	VerifyAttempts int
	// VerifyDelay is the pause between verification attempts.
	VerifyDelay time.Duration
}

// New returns an engine over the given plugins.
func New(ps []plugin.Plugin) *Engine {
	m := make(map[string]plugin.Plugin, len(ps))
	for _, p := range ps {
		m[p.Name()] = p
	}
	return &Engine{plugins: m, Parallel: 32, VerifyAttempts: 3, VerifyDelay: 200 * time.Millisecond}
}

// Plugin returns a plugin by name.
func (e *Engine) Plugin(name string) (plugin.Plugin, bool) {
	p, ok := e.plugins[name]
	return p, ok
}

// Names returns the engine's plugin names, sorted.
func (e *Engine) Names() []string {
	return slices.Sorted(maps.Keys(e.plugins))
}

// Types returns the state constructors of the engine's plugins, for decoding.
func (e *Engine) Types() state.Types {
	t := state.Types{}
	for n, p := range e.plugins {
		t[n] = p.NewState
	}
	return t
}

// Validate runs plugin-specific validation; it fits state.Validator.
func (e *Engine) Validate(name string, st any) state.Problems {
	if v, ok := e.plugins[name].(plugin.Validator); ok {
		return v.Validate(st)
	}
	return nil
}

// Known returns nil when every name is a plugin of this engine, or an
// errkind.UnknownPlugin error naming the first that is not.
func (e *Engine) Known(names []string) error {
	for _, n := range names {
		if _, ok := e.plugins[n]; !ok {
			return e.unknown(n)
		}
	}
	return nil
}

func (e *Engine) unknown(n string) error {
	return errkind.New(errkind.UnknownPlugin, fmt.Errorf("unknown plugin %q (known: %s)", n, strings.Join(e.Names(), ", ")))
}

// Load reads and strictly decodes a document for this engine's plugins.
func (e *Engine) Load(path string) (*state.Document, error) {
	return state.Load(path, e.Types(), e.Validate)
}

// Event is progress of an apply.
type Event struct {
	// Phase is "apply" or "rollback" for an op's start and end, or
	// "verify" once the apply phase's result has been verified (Verify
	// set), before any rollback starts.
	Phase string
	Op    plugin.Op
	// Done is false when the op starts, true when it ends (Err set on failure).
	Done     bool
	Err      error
	Duration time.Duration
	Index    int // 1-based position of the op among the phase's ops
	Total    int
	Verify   *Verification
}

// events is what WithEvents puts in a context.
type events struct {
	mu sync.Mutex
	fn func(Event)
}

type eventsKey struct{}

// WithEvents returns a context under which Apply (and the rollbacks it
// runs) reports progress to fn, one event at a time although ops run in
// several goroutines. Progress belongs to one call, not to the engine,
// which front ends share.
func WithEvents(ctx context.Context, fn func(Event)) context.Context {
	if fn == nil {
		return ctx
	}
	return context.WithValue(ctx, eventsKey{}, &events{fn: fn})
}

func emit(ctx context.Context, ev Event) {
	ev2, ok := ctx.Value(eventsKey{}).(*events)
	if !ok {
		return
	}
	ev2.mu.Lock()
	defer ev2.mu.Unlock()
	ev2.fn(ev)
}

// QueryResult is one plugin's live state or why it could not be read.
type QueryResult struct {
	Plugin   string
	State    any
	Err      error
	Duration time.Duration
}

// Query reads the named plugins (all when names is empty) in parallel. A
// failing plugin never hides the others: its result carries the error.
func (e *Engine) Query(ctx context.Context, names []string) map[string]QueryResult {
	if len(names) == 0 {
		names = e.Names()
	}
	return e.query(ctx, names, nil)
}

// queryFor reads the plugins of desired, each only as far as desired needs
// where the plugin can (plugin.Scoped), in parallel.
func (e *Engine) queryFor(ctx context.Context, desired map[string]any) map[string]QueryResult {
	return e.query(ctx, slices.Sorted(maps.Keys(desired)), desired)
}

func (e *Engine) query(ctx context.Context, names []string, desired map[string]any) map[string]QueryResult {
	out := make(map[string]QueryResult, len(names))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range names {
		p, ok := e.plugins[n]
		if !ok {
			out[n] = QueryResult{Plugin: n, Err: e.unknown(n)}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := QueryResult{Plugin: n}
			sp, scoped := p.(plugin.Scoped)
			if err := p.Available(ctx); err != nil {
				r.Err = errkind.New(errkind.Unavailable, fmt.Errorf("unavailable: %w", err))
			} else if scoped && desired != nil {
				r.State, r.Err = sp.QueryFor(ctx, desired[n])
			} else {
				r.State, r.Err = p.Query(ctx)
			}
			r.Duration = time.Since(start)
			mu.Lock()
			out[n] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Plan is what apply would do.
type Plan struct {
	Ops []plugin.Op `json:"ops"`
	// Current is the live state each planned plugin was compared against.
	Current map[string]any `json:"-"`
}

// Empty reports whether the host already matches.
func (p *Plan) Empty() bool { return len(p.Ops) == 0 }

// PluginError names the plugin a failure came from.
type PluginError struct {
	Plugin string
	Err    error
}

func (e *PluginError) Error() string { return e.Plugin + ": " + e.Err.Error() }
func (e *PluginError) Unwrap() error { return e.Err }

// Plan queries the plugins the document names and plans each. Any plugin
// that cannot be queried or planned fails the whole plan: acting on half a
// picture is how hosts get broken.
func (e *Engine) Plan(ctx context.Context, doc *state.Document) (*Plan, error) {
	names := docPlugins(doc)
	cur := e.queryFor(ctx, doc.Plugins)
	var errs []error
	for _, n := range names {
		if r := cur[n]; r.Err != nil {
			errs = append(errs, &PluginError{n, r.Err})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	current := map[string]any{}
	for n, r := range cur {
		current[n] = r.State
	}
	ops, err := e.planAgainst(current, doc.Plugins)
	if err != nil {
		return nil, err
	}
	return &Plan{Ops: ops, Current: current}, nil
}

func (e *Engine) planAgainst(current, desired map[string]any) ([]plugin.Op, error) {
	var ops []plugin.Op
	for _, n := range slices.Sorted(maps.Keys(desired)) {
		p := e.plugins[n]
		pops, err := p.Plan(current[n], desired[n])
		if err != nil {
			return nil, &PluginError{n, fmt.Errorf("plan: %w", err)}
		}
		for i := range pops {
			pops[i].Plugin = n
		}
		ops = append(ops, pops...)
	}
	return e.order(ops)
}

func docPlugins(doc *state.Document) []string {
	return slices.Sorted(maps.Keys(doc.Plugins))
}
