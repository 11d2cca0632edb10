package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Status of one op after apply.
type Status string

const (
	Applied Status = "applied"
	Failed  Status = "failed"
	Skipped Status = "skipped" // not run because an earlier op failed
)

// Outcome is what happened to one op.
type Outcome struct {
	Op       plugin.Op     `json:"op"`
	Status   Status        `json:"status"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Mismatch is one field that does not match after apply.
type Mismatch struct {
	Plugin  string `json:"plugin"`
	Item    string `json:"item"`
	Path    string `json:"path"`
	Desired any    `json:"desired"`
	Current any    `json:"current"`
}

func (m Mismatch) String() string {
	return plugin.Change{Path: m.Path, Desired: m.Desired, Current: m.Current}.String()
}

// Verification is the result of querying and planning again.
type Verification struct {
	OK         bool       `json:"ok"`
	Mismatches []Mismatch `json:"mismatches,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Result is the whole story of one apply.
type Result struct {
	Outcomes []Outcome    `json:"outcomes"`
	Verify   Verification `json:"verify"`
	// Rollback is set when the apply failed and the engine undid it.
	Rollback *RollbackResult `json:"rollback,omitempty"`
	Success  bool            `json:"success"`
	// Err says in one sentence what failed; nil on success.
	Err error `json:"-"`
}

// RollbackResult reports the undo of a failed transaction.
type RollbackResult struct {
	Items    []string     `json:"items"`
	Outcomes []Outcome    `json:"outcomes"`
	Verify   Verification `json:"verify"`
	// NotUndone lists what could not be restored.
	NotUndone []Mismatch `json:"not_undone,omitempty"`
}

// RollbackTimeout bounds a rollback, which runs even when the apply's own
// context was cancelled.
var RollbackTimeout = 5 * time.Minute

// Apply carries out a plan made by Plan for doc, verifies the result and,
// on any failure, rolls back exactly the items the transaction touched.
func (e *Engine) Apply(ctx context.Context, doc *state.Document, plan *Plan) *Result {
	res := &Result{}
	res.Outcomes = e.run(ctx, "apply", plan.Ops)
	var failed []Outcome
	for _, o := range res.Outcomes {
		if o.Status == Failed {
			failed = append(failed, o)
		}
	}
	if len(failed) == 0 {
		res.Verify = e.verify(ctx, doc.Plugins)
		emit(ctx, Event{Phase: "verify", Done: true, Verify: &res.Verify})
		if res.Verify.OK {
			res.Success = true
			return res
		}
		res.Err = fmt.Errorf("verification failed: %s", summarize(res.Verify))
	} else {
		// Plugin errors already name what they were doing.
		res.Err = fmt.Errorf("%s: %s", failed[0].Op.Plugin, failed[0].Error)
		res.Verify = Verification{Error: "not verified: an op failed"}
		emit(ctx, Event{Phase: "verify", Done: true, Verify: &res.Verify})
	}
	res.Rollback = e.rollback(ctx, plan, res.Outcomes)
	return res
}

func summarize(v Verification) string {
	if v.Error != "" {
		return v.Error
	}
	if len(v.Mismatches) == 0 {
		return "no mismatches"
	}
	s := v.Mismatches[0].Plugin + ": " + v.Mismatches[0].String()
	if n := len(v.Mismatches) - 1; n > 0 {
		s += fmt.Sprintf(" (and %d more)", n)
	}
	return s
}

// Verify queries the document's plugins and reports every field that
// differs. It retries briefly because some services settle after replying.
func (e *Engine) Verify(ctx context.Context, doc *state.Document) Verification {
	return e.verify(ctx, doc.Plugins)
}

func (e *Engine) verify(ctx context.Context, desired map[string]any) Verification {
	attempts := max(e.VerifyAttempts, 1)
	var v Verification
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return Verification{Error: "verification interrupted: " + ctx.Err().Error()}
			case <-time.After(e.VerifyDelay):
			}
		}
		v = e.verifyOnce(ctx, desired)
		if v.OK {
			return v
		}
	}
	return v
}

func (e *Engine) verifyOnce(ctx context.Context, desired map[string]any) Verification {
	names := slices.Sorted(maps.Keys(desired))
	cur := e.queryFor(ctx, desired)
	var errs []error
	current := map[string]any{}
	for _, n := range names {
		r := cur[n]
		if r.Err != nil {
			errs = append(errs, &PluginError{n, r.Err})
			continue
		}
		current[n] = r.State
	}
	if len(errs) > 0 {
		return Verification{Error: "could not query: " + errors.Join(errs...).Error()}
	}
	ops, err := e.planAgainst(current, desired)
	if err != nil {
		return Verification{Error: err.Error()}
	}
	if len(ops) > 0 {
		return Verification{Mismatches: mismatches(ops)}
	}
	return e.probe(ctx, names, desired)
}

// probe runs the declared probes of plugins that have them (plugin.Prober)
// once every field matches.
func (e *Engine) probe(ctx context.Context, names []string, desired map[string]any) Verification {
	var ms []Mismatch
	for _, n := range names {
		p, ok := e.plugins[n]
		if !ok {
			continue
		}
		pr, ok := p.(plugin.Prober)
		if !ok {
			continue
		}
		failed, err := pr.Probe(ctx, desired[n])
		if err != nil {
			return Verification{Error: (&PluginError{n, fmt.Errorf("probe: %w", err)}).Error()}
		}
		for _, c := range failed {
			ms = append(ms, Mismatch{Plugin: n, Item: "probes", Path: c.Path, Desired: c.Desired, Current: c.Current})
		}
	}
	return Verification{OK: len(ms) == 0, Mismatches: ms}
}

// Mismatches turns the ops a verification plan still wants into fields.
func mismatches(ops []plugin.Op) []Mismatch {
	var out []Mismatch
	for _, op := range ops {
		if len(op.Changes) == 0 {
			out = append(out, Mismatch{Plugin: op.Plugin, Item: op.Item, Path: op.Item, Desired: op.Description, Current: "not done"})
			continue
		}
		for _, c := range op.Changes {
			out = append(out, Mismatch{Plugin: op.Plugin, Item: op.Item, Path: c.Path, Desired: c.Desired, Current: c.Current})
		}
	}
	return out
}

// rollback restores the pre-apply state of every item an applied or failed
// op touched, then verifies that.
func (e *Engine) rollback(ctx context.Context, plan *Plan, outcomes []Outcome) *RollbackResult {
	touched := map[string][]string{}
	var items []string
	for _, o := range outcomes {
		if o.Status == Skipped {
			continue
		}
		touched[o.Op.Plugin] = appendUnique(touched[o.Op.Plugin], o.Op.Item)
		items = appendUnique(items, o.Op.Plugin+"/"+o.Op.Item)
	}
	if len(items) == 0 {
		return &RollbackResult{Verify: Verification{OK: true}}
	}
	desired := map[string]any{}
	for n, its := range touched {
		desired[n] = e.plugins[n].Subset(plan.Current[n], its)
	}
	rb := e.Restore(ctx, desired)
	rb.Items = items
	return rb
}

// Current reads the live state of what desired names (scoped where the
// plugin can), for hashing the state before and after a transaction.
func (e *Engine) Current(ctx context.Context, desired map[string]any) (map[string]any, error) {
	cur := e.queryFor(ctx, desired)
	out := map[string]any{}
	for _, n := range slices.Sorted(maps.Keys(desired)) {
		if cur[n].Err != nil {
			return nil, &PluginError{n, cur[n].Err}
		}
		out[n] = cur[n].State
	}
	return out, nil
}

// PlanBetween plans from one state to another without querying: what
// changed between two snapshots, say.
func (e *Engine) PlanBetween(from, to map[string]any) ([]plugin.Op, error) {
	return e.planAgainst(from, to)
}

// Restore makes the host match desired (plugin name → typed partial state)
// as a best effort: every op runs even if another fails, then the result is
// verified. It is how rollback, crash recovery and an unconfirmed apply
// undo a transaction. It runs under its own bounded context, so an
// interrupted caller (Ctrl-C, --timeout) is still undone.
func (e *Engine) Restore(ctx context.Context, desired map[string]any) *RollbackResult {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RollbackTimeout)
	defer cancel()
	rb := &RollbackResult{}
	names := slices.Sorted(maps.Keys(desired))
	cur := e.queryFor(ctx, desired)
	current := map[string]any{}
	for _, n := range names {
		if r := cur[n]; r.Err != nil {
			rb.Verify = Verification{Error: fmt.Sprintf("rollback: cannot query %s: %v", n, r.Err)}
			return rb
		}
		current[n] = cur[n].State
	}
	ops, err := e.planAgainst(current, desired)
	if err != nil {
		rb.Verify = Verification{Error: "rollback: " + err.Error()}
		return rb
	}
	rb.Outcomes = e.runAll(ctx, "rollback", ops, false)
	rb.Verify = e.verify(ctx, desired)
	rb.NotUndone = rb.Verify.Mismatches
	return rb
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func (e *Engine) run(ctx context.Context, phase string, ops []plugin.Op) []Outcome {
	return e.runAll(ctx, phase, ops, true)
}

// runAll executes ops as a DAG: an op starts when everything it depends on
// has been applied; up to Parallel ops run at once. With failFast, the
// first failure stops new ops from starting; ops depending on a failed op
// are always skipped.
func (e *Engine) runAll(ctx context.Context, phase string, ops []plugin.Op, failFast bool) []Outcome {
	out := make([]Outcome, len(ops))
	index := map[string]int{}
	for i, op := range ops {
		index[op.ID] = i
		out[i] = Outcome{Op: op, Status: Skipped}
	}
	done := make([]bool, len(ops))
	started := make([]bool, len(ops))
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	running, finished := 0, 0
	stop := false
	par := max(e.Parallel, 1)

	// blocked reports whether op i can never run (a dependency did not apply).
	blocked := func(i int) bool {
		for _, d := range ops[i].DependsOn {
			j, ok := index[d]
			if ok && done[j] && out[j].Status != Applied {
				return true
			}
		}
		return false
	}
	ready := func(i int) bool {
		for _, d := range ops[i].DependsOn {
			if j, ok := index[d]; ok && (!done[j] || out[j].Status != Applied) {
				return false
			}
		}
		return true
	}

	mu.Lock()
	for finished < len(ops) {
		progressed := false
		for i := range ops {
			if started[i] {
				continue
			}
			if stop || blocked(i) || ctx.Err() != nil {
				started[i], done[i] = true, true
				finished++
				progressed = true
				continue
			}
			if running >= par || !ready(i) {
				continue
			}
			started[i] = true
			running++
			progressed = true
			n := finished + running
			go func(i, n int) {
				op := ops[i]
				emit(ctx, Event{Phase: phase, Op: op, Index: n, Total: len(ops)})
				start := time.Now()
				err := e.applyOne(ctx, op)
				d := time.Since(start)
				emit(ctx, Event{Phase: phase, Op: op, Done: true, Err: err, Duration: d, Index: n, Total: len(ops)})
				mu.Lock()
				out[i].Duration = d
				if err != nil {
					out[i].Status, out[i].Error = Failed, err.Error()
					if failFast {
						stop = true
					}
				} else {
					out[i].Status = Applied
				}
				done[i] = true
				running--
				finished++
				cond.Broadcast()
				mu.Unlock()
			}(i, n)
		}
		if !progressed && finished < len(ops) {
			cond.Wait()
		}
	}
	mu.Unlock()
	return out
}

func (e *Engine) applyOne(ctx context.Context, op plugin.Op) (err error) {
	p, ok := e.plugins[op.Plugin]
	if !ok {
		return fmt.Errorf("no plugin %q", op.Plugin)
	}
	defer func() {
		// A plugin bug must fail its op, not take the transaction (and
		// its rollback) down with it.
		if r := recover(); r != nil {
			err = fmt.Errorf("plugin %s panicked: %v", op.Plugin, r)
		}
	}()
	return p.Apply(ctx, op)
}
