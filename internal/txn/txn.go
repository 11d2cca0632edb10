package txn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

// Record is what a transaction tells the audit log.
type Record struct {
	Kind     string // apply, rollback, restore, recovery, refused
	Result   string // success, failed, rolled-back, not-confirmed, recovered
	Message  string
	Document string // desired document hash
	Snapshot string
	Plugins  []string
	Outcomes []engine.Outcome
	Undo     []engine.Outcome
	Verified *bool
	// Before and After hash the live state of the document's items before
	// and after the transaction (state.HashOf).
	Before, After string
	// StartedBy and StartedFor name, on a recovery, the source and client
	// of the transaction that was undone.
	StartedBy, StartedFor string
}

// Recorder writes audit records.
type Recorder interface {
	Record(Record) error
}

// Manager runs transactions in one state directory.
type Manager struct {
	Dir      string
	Engine   *engine.Engine
	Recorder Recorder // may be nil
	// Snapshots keeps the pre-apply snapshots; nil disables them.
	Snapshots *snapshot.Store
	// Log receives one-line notices (recovery, btrfs snapshot) for people.
	Log func(format string, args ...any)
	// Keep and MaxAge bound the snapshots kept after each new one (0: no
	// bound). Pruned snapshots are recorded in the audit log with their
	// blob hashes, so history stays verifiable.
	Keep   int
	MaxAge time.Duration
}

func (m *Manager) logf(format string, args ...any) {
	if m.Log != nil {
		m.Log(format, args...)
	}
}

func (m *Manager) record(r Record) error {
	if m.Recorder == nil {
		return nil
	}
	if err := m.Recorder.Record(r); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	return nil
}

// Options of one transaction.
type Options struct {
	// Kind is recorded in the audit log: apply, rollback or restore.
	Kind string
	// ConfirmWithin, when set, waits that long after a verified apply for
	// `op-dbus commit`; without it everything is rolled back.
	ConfirmWithin time.Duration
	// Arm is called just before the journal records that the transaction
	// waits for confirmation, with its ID and deadline (to hand the
	// deadline to a keeper outside this process).
	Arm func(id string, deadline time.Time)
	// OnWait is called once the transaction waits for confirmation, with
	// the journal's transaction ID.
	OnWait func(id string, deadline time.Time)
	// OnStart, when set, is told the journal's transaction ID once the
	// journal holds the transaction, before anything changes.
	OnStart func(id string)
	// Source and Client name the front end and the actor that started the
	// transaction; the journal keeps them so that a recovery by another
	// process records whose change it undid.
	Source, Client string
}

// Outcome is a transaction's result.
type Outcome struct {
	Result *engine.Result
	// ID is the journal's transaction ID ("" when the plan was empty).
	ID string
	// Snapshot is the pre-apply snapshot's ID.
	Snapshot string
	// Confirmed is false when a confirm timer ran out (the changes were then
	// rolled back: Unconfirmed holds that rollback).
	Confirmed   bool
	Unconfirmed *engine.RollbackResult
}

// Err summarizes a failed outcome; nil on success.
func (o *Outcome) Err() error {
	if o.Unconfirmed != nil {
		msg := "not confirmed in time: every change was rolled back"
		if !o.Unconfirmed.Verify.OK {
			msg = "not confirmed in time, and the rollback is incomplete: " + describeNotUndone(o.Unconfirmed)
		}
		return errors.New(msg)
	}
	if o.Result != nil && !o.Result.Success {
		return o.Result.Err
	}
	return nil
}

func describeNotUndone(rb *engine.RollbackResult) string {
	if rb.Verify.Error != "" {
		return rb.Verify.Error
	}
	s := ""
	for i, m := range rb.NotUndone {
		if i > 0 {
			s += "; "
		}
		s += m.Plugin + "." + m.String()
	}
	return s
}

// Apply runs plan (made by Engine.Plan for doc) as a transaction. The
// caller holds the lock (Lock) and has run Recover.
func (m *Manager) Apply(ctx context.Context, doc *state.Document, plan *engine.Plan, opt Options) (*Outcome, error) {
	if opt.Kind == "" {
		opt.Kind = "apply"
	}
	out := &Outcome{Confirmed: true}
	if plan.Empty() {
		out.Result = &engine.Result{Success: true, Verify: engine.Verification{OK: true}}
		return out, nil
	}
	items := map[string][]string{}
	for _, op := range plan.Ops {
		if !slices.Contains(items[op.Plugin], op.Item) {
			items[op.Plugin] = append(items[op.Plugin], op.Item)
		}
	}
	pre := map[string]json.RawMessage{}
	for p, its := range items {
		pl, _ := m.Engine.Plugin(p)
		b, err := json.Marshal(pl.Subset(plan.Current[p], its))
		if err != nil {
			return nil, err
		}
		pre[p] = b
	}
	if m.Snapshots != nil {
		id, err := m.snapshot(ctx, docPlugins(doc), "pre-"+opt.Kind, "")
		if err != nil {
			return nil, fmt.Errorf("pre-apply snapshot: %w (nothing was changed)", err)
		}
		out.Snapshot = id
	}
	j := &Journal{Version: 1, ID: newID(), PID: os.Getpid(), Started: time.Now().UTC(), Phase: PhaseApplying,
		Source: opt.Source, Client: opt.Client,
		Document: doc.Hash(), Snapshot: out.Snapshot, PreState: pre, Items: items, Ops: len(plan.Ops)}
	if err := writeJournal(m.Dir, j); err != nil {
		return nil, fmt.Errorf("write journal: %w (nothing was changed)", err)
	}
	out.ID = j.ID
	if opt.OnStart != nil {
		opt.OnStart(j.ID)
	}
	res := m.Engine.Apply(ctx, doc, plan)
	out.Result = res
	rec := Record{Kind: opt.Kind, Document: doc.Hash(), Snapshot: out.Snapshot, Plugins: docPlugins(doc), Outcomes: res.Outcomes,
		Before: state.HashOf(plan.Current)}

	if !res.Success {
		if err := removeJournal(m.Dir); err != nil {
			return out, err
		}
		rec.Result, rec.Message = "rolled-back", res.Err.Error()
		if res.Rollback != nil {
			rec.Undo = res.Rollback.Outcomes
			if !res.Rollback.Verify.OK {
				rec.Result = "failed"
			}
		}
		f := false
		rec.Verified = &f
		return out, m.finish(ctx, doc, rec)
	}
	if opt.ConfirmWithin > 0 {
		j.Phase = PhaseAwaitingConfirm
		j.Deadline = time.Now().Add(opt.ConfirmWithin).UTC()
		// Arm the outside keeper of the deadline before the journal says
		// the transaction waits: a process that dies after the journal
		// write has its deadline kept.
		if opt.Arm != nil {
			opt.Arm(j.ID, j.Deadline)
		}
		if err := writeJournal(m.Dir, j); err != nil {
			return out, err
		}
		if opt.OnWait != nil {
			opt.OnWait(j.ID, j.Deadline)
		}
		if !m.waitCommit(ctx, j) {
			out.Confirmed = false
			out.Unconfirmed = m.Engine.Restore(ctx, decodePre(m.Engine, pre))
			if err := removeJournal(m.Dir); err != nil {
				return out, err
			}
			rec.Message = fmt.Sprintf("not confirmed within %s; rolled back", opt.ConfirmWithin)
			rec.Undo = out.Unconfirmed.Outcomes
			if !out.Unconfirmed.Verify.OK {
				rec.Message += "; rollback incomplete: " + describeNotUndone(out.Unconfirmed)
			}
			return out, m.finish(ctx, doc, rec)
		}
	}
	if err := m.writeLast(j); err != nil {
		return out, err
	}
	if err := removeJournal(m.Dir); err != nil {
		return out, err
	}
	t := true
	rec.Result, rec.Verified = "success", &t
	return out, m.finish(ctx, doc, rec)
}

// finish hashes the state after the transaction and records it.
func (m *Manager) finish(ctx context.Context, doc *state.Document, rec Record) error {
	if after, err := m.Engine.Current(ctx, doc.Plugins); err == nil {
		rec.After = state.HashOf(after)
	}
	return m.record(rec)
}

func (m *Manager) waitCommit(ctx context.Context, j *Journal) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if committed(m.Dir, j.ID) {
			return true
		}
		if !time.Now().Before(j.Deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// snapshot takes a full query of the named plugins and stores it; on a
// btrfs subvolume state directory it also takes a read-only btrfs snapshot.
func (m *Manager) snapshot(ctx context.Context, plugins []string, reason, tag string) (string, error) {
	res := m.Engine.Query(ctx, plugins)
	states := map[string]any{}
	for _, n := range plugins {
		r := res[n]
		if r.Err != nil {
			return "", fmt.Errorf("%s: %w", n, r.Err)
		}
		states[n] = r.State
	}
	sn, err := m.Snapshots.Create(states, tag, reason)
	if err != nil {
		return "", err
	}
	if err := m.Prune(m.Keep, m.MaxAge); err != nil {
		return "", err
	}
	if err := m.noteDamage(); err != nil {
		return "", err
	}
	if snapshot.BtrfsSubvolume(m.Dir) {
		if p, err := snapshot.BtrfsSnapshot(ctx, m.Dir, sn.Time.Format("20060102T150405Z")+"-"+sn.ID); err != nil {
			m.logf("btrfs snapshot skipped: %v", err)
		} else {
			m.logf("btrfs read-only snapshot: %s", p)
		}
	}
	return sn.ID, nil
}

// Prune applies retention and records what it removed.
func (m *Manager) Prune(keep int, maxAge time.Duration) error {
	if keep <= 0 && maxAge <= 0 {
		return nil
	}
	// A failure part way still returns what was removed: record that.
	removed, err := m.Snapshots.Prune(keep, maxAge, time.Now())
	if len(removed) == 0 {
		if err != nil {
			return err
		}
		return m.pruneBtrfs()
	}
	var lines []string
	for _, sn := range removed {
		var ps []string
		for _, p := range slices.Sorted(maps.Keys(sn.Plugins)) {
			ps = append(ps, p+"="+sn.Plugins[p])
		}
		lines = append(lines, fmt.Sprintf("%s@%s{%s}", sn.ID, sn.Time.Format(time.RFC3339), strings.Join(ps, ",")))
	}
	if rerr := m.record(Record{Kind: "snapshot-prune", Result: "success", Message: "pruned " + strings.Join(lines, " ")}); rerr != nil {
		return rerr
	}
	if err != nil {
		return err
	}
	return m.pruneBtrfs()
}

// pruneBtrfs deletes the btrfs snapshots of the state directory whose
// stored snapshot retention removed, and records what it deleted.
func (m *Manager) pruneBtrfs() error {
	if !snapshot.BtrfsSubvolume(m.Dir) {
		return nil
	}
	left, err := m.Snapshots.List()
	if err != nil {
		return err
	}
	ids := map[string]bool{}
	for _, sn := range left {
		ids[sn.ID] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	removed, err := snapshot.BtrfsPrune(ctx, m.Dir, func(id string) bool { return ids[id] })
	if len(removed) > 0 {
		if rerr := m.record(Record{Kind: "snapshot-prune", Result: "success", Message: "pruned btrfs snapshots " + strings.Join(removed, " ")}); rerr != nil {
			return rerr
		}
	}
	return err
}

// Snapshot takes a snapshot of every available plugin (or those named).
func (m *Manager) Snapshot(ctx context.Context, plugins []string, tag string) (*snapshot.Snapshot, error) {
	if len(plugins) == 0 {
		for n, r := range m.Engine.Query(ctx, nil) {
			if r.Err == nil {
				plugins = append(plugins, n)
			}
		}
		sort.Strings(plugins)
	}
	id, err := m.snapshot(ctx, plugins, "manual", tag)
	if err != nil {
		return nil, err
	}
	return m.Snapshots.Get(id)
}

// Recover finds a journal left by a transaction that did not end (a crash,
// SIGKILL, power loss) and undoes it: the pre-apply state of every planned
// item is applied and verified, and the recovery is recorded. The caller
// holds the lock, so the journal's owner is gone. It returns nil, nil when
// there was nothing to recover.
func (m *Manager) Recover(ctx context.Context) (*engine.RollbackResult, error) {
	j, err := ReadJournal(m.Dir)
	if err != nil || j == nil {
		return nil, err
	}
	m.logf("found an unfinished transaction (started %s by pid %d, %s): rolling it back", j.Started.Format(time.RFC3339), j.PID, j.Phase)
	desired := decodePre(m.Engine, j.PreState)
	rb := m.Engine.Restore(ctx, desired)
	verified := rb.Verify.OK
	rec := Record{Kind: "recovery", Document: j.Document, Snapshot: j.Snapshot, Undo: rb.Outcomes, Verified: &verified,
		StartedBy: j.Source, StartedFor: j.Client}
	rec.Plugins = slices.Sorted(maps.Keys(j.PreState))
	what := fmt.Sprintf("transaction %s (%s)", j.ID, j.Phase)
	if by := j.startedBy(); by != "" {
		what = fmt.Sprintf("transaction %s (%s, started by %s)", j.ID, j.Phase, by)
	}
	if verified {
		rec.Result, rec.Message = "recovered", what+" interrupted; rolled back and verified"
		if j.Phase == PhaseAwaitingConfirm && !time.Now().Before(j.Deadline) {
			rec.Message = what + " interrupted and not confirmed by its deadline " + j.Deadline.Format(time.RFC3339) + "; rolled back and verified"
		}
		if err := removeJournal(m.Dir); err != nil {
			return rb, err
		}
	} else {
		rec.Result, rec.Message = "failed", "recovery incomplete: "+describeNotUndone(rb)+"; "+what
	}
	if err := m.record(rec); err != nil {
		return rb, err
	}
	if !verified {
		return rb, fmt.Errorf("rolling back the interrupted transaction is incomplete: %s (the journal is kept at %s)", describeNotUndone(rb), journalPath(m.Dir))
	}
	return rb, nil
}

func decodePre(e *engine.Engine, pre map[string]json.RawMessage) map[string]any {
	out := map[string]any{}
	for n, raw := range pre {
		p, ok := e.Plugin(n)
		if !ok {
			continue
		}
		st := p.NewState()
		if err := json.Unmarshal(raw, st); err == nil {
			out[n] = st
		}
	}
	return out
}

// Last is what `op-dbus rollback` restores: the pre-apply state of every
// item the last successful apply changed.
type Last struct {
	Time     time.Time                  `json:"time"`
	Document string                     `json:"document_hash"`
	Snapshot string                     `json:"snapshot,omitempty"`
	PreState map[string]json.RawMessage `json:"pre_state"`
	Items    map[string][]string        `json:"items"`
}

func (m *Manager) writeLast(j *Journal) error {
	b, err := json.MarshalIndent(Last{Time: time.Now().UTC(), Document: j.Document, Snapshot: j.Snapshot, PreState: j.PreState, Items: j.Items}, "", "  ")
	if err != nil {
		return err
	}
	return writeSynced(statedir.New(m.Dir).LastTransaction(), b)
}

// LastDocument returns the document that undoes the last successful apply.
func (m *Manager) LastDocument(validate state.Validator) (*state.Document, *Last, error) {
	path := statedir.New(m.Dir).LastTransaction()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("nothing to roll back: no apply has been recorded in %s", m.Dir)
	}
	if err != nil {
		return nil, nil, err
	}
	var l Last
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, nil, errkind.New(errkind.Damaged, fmt.Errorf("%s is corrupt: %v (move it away to forget the last apply)", path, err))
	}
	doc, err := DocumentFrom(m.Engine, l.PreState, validate)
	return doc, &l, err
}

// DocumentFrom builds a strictly checked document from raw plugin states.
func DocumentFrom(e *engine.Engine, states map[string]json.RawMessage, validate state.Validator) (*state.Document, error) {
	b, err := json.Marshal(map[string]any{"version": state.Version, "plugins": states})
	if err != nil {
		return nil, err
	}
	return state.Decode(b, state.FormatJSON, e.Types(), validate)
}

func docPlugins(doc *state.Document) []string { return slices.Sorted(maps.Keys(doc.Plugins)) }

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
