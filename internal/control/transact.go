package control

import (
	"context"
	"fmt"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/journallog"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/snapshot"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// Deadlines keeps a waiting transaction's confirm deadline outside the
// process that waits, so it is honoured even if that process dies: at the
// deadline something runs `op-dbus recover --if-deadline-passed`.
type Deadlines interface {
	// Ready returns nil when deadlines can be kept, or why not.
	Ready(ctx context.Context) error
	// Arm keeps the deadline of transaction id.
	Arm(ctx context.Context, id string, deadline time.Time) error
	// Disarm forgets it (the transaction was committed or rolled back).
	Disarm(ctx context.Context, id string) error
}

// Request is one transaction.
type Request struct {
	// Kind is recorded in the audit log: apply, rollback, restore, correction.
	Kind string
	// Client names who asked (an MCP client, an API token, a D-Bus sender).
	Client string
	Doc    *state.Document
	// PlanHash, when set, must be the hash of the plan made under the lock
	// (the plan a front end showed); otherwise the apply is refused as stale.
	PlanHash string
	// Approve, when set, sees the plan made under the lock before anything
	// changes and may refuse it (a person answering no).
	Approve func(*engine.Plan) error
	// ConfirmWithin, when set, waits that long after a verified apply for
	// `op-dbus commit`; without it everything is rolled back.
	ConfirmWithin time.Duration
	// OnWait is told when the transaction starts waiting for confirmation.
	OnWait func(deadline time.Time)
	// Events receives progress (engine.WithEvents).
	Events func(engine.Event)
	// OnStart is told the transaction's journal ID before anything changes.
	OnStart func(id string)
}

// Outcome is a transaction's result.
type Outcome struct {
	// Plan is the plan made under the lock.
	Plan *engine.Plan
	// Recovered is set when an interrupted transaction was rolled back first.
	Recovered *engine.RollbackResult
	// Txn is the transaction's result; nil when the plan was empty.
	Txn *txn.Outcome
	// AuditSeq is the sequence number of the transaction's audit entry,
	// when Audited (one was written).
	AuditSeq uint64
	Audited  bool
}

// Err is nil when the transaction applied and verified (or had nothing to do).
func (o *Outcome) Err() error {
	if o == nil || o.Txn == nil {
		return nil
	}
	return errkind.New(errkind.Failed, o.Txn.Err())
}

// Transact is the one path by which op-dbus changes a host: take the state
// directory's lock, finish any interrupted transaction, plan, check the
// plan hash, let the caller approve, then apply as a journaled transaction
// (snapshot, apply in order, verify, roll back on failure, optionally wait
// for confirmation) recorded in the audit log. Refusals are recorded too.
func (s *Service) Transact(ctx context.Context, req Request) (*Outcome, error) {
	if req.Kind == "" {
		req.Kind = "apply"
	}
	if req.ConfirmWithin > 0 && s.opts.Deadlines != nil {
		if err := s.opts.Deadlines.Ready(ctx); err != nil {
			err = errkind.New(errkind.Unsupported, fmt.Errorf("--confirm-within: %w", err))
			s.Refuse(req.Kind, req.Client, err.Error())
			return nil, err
		}
	}
	unlock, err := s.dir.Lock()
	if err != nil {
		s.Refuse(req.Kind, req.Client, err.Error())
		return nil, err
	}
	defer unlock()
	out := &Outcome{}
	// The audit log and snapshot store are opened only when there is
	// something to record: an interrupted transaction to finish now, or a
	// non-empty plan below. A no-op apply stays a query and a plan.
	var m *txn.Manager
	var closeM func()
	defer func() {
		if closeM != nil {
			closeM()
		}
	}()
	j, err := txn.ReadJournal(s.StateDir())
	if err != nil {
		s.Refuse(req.Kind, req.Client, err.Error())
		return nil, err
	}
	if j != nil {
		if m, closeM, err = s.manager(req.Client); err != nil {
			return nil, err
		}
		if out.Recovered, err = m.Recover(ctx); err != nil {
			s.Refuse(req.Kind, req.Client, err.Error())
			return nil, errkind.New(errkind.Damaged, err)
		}
		s.disarm(ctx, j.ID)
	}
	p, err := s.engine.Plan(ctx, req.Doc)
	if err != nil {
		return nil, err
	}
	out.Plan = p
	if req.PlanHash != "" && hashPlan(req.Doc, p) != req.PlanHash {
		s.Refuse(req.Kind, req.Client, "apply of plan "+req.PlanHash+": "+ErrStalePlan.Error())
		return out, ErrStalePlan
	}
	if p.Empty() {
		return out, nil
	}
	if req.Approve != nil {
		if err := req.Approve(p); err != nil {
			return out, err
		}
	}
	if m == nil {
		if m, closeM, err = s.manager(req.Client); err != nil {
			return out, err
		}
	}
	var armed string
	opt := txn.Options{Kind: req.Kind, Source: s.source, Client: req.Client, ConfirmWithin: req.ConfirmWithin,
		Arm: func(id string, deadline time.Time) {
			if s.opts.Deadlines == nil {
				return
			}
			if err := s.opts.Deadlines.Arm(ctx, id, deadline); err != nil {
				s.logAt(journallog.Warning, journallog.Fields{journallog.FieldTxn: id}, "confirm deadline: %v (it is kept by this process only)", err)
				return
			}
			armed = id
		},
		OnWait: func(_ string, deadline time.Time) {
			if req.OnWait != nil {
				req.OnWait(deadline)
			}
		}, OnStart: req.OnStart}
	rec, _ := m.Recorder.(*txn.LedgerRecorder)
	if rec != nil {
		rec.Recorded = false // not a recovery's entry
	}
	out.Txn, err = m.Apply(engine.WithEvents(ctx, req.Events), req.Doc, p, opt)
	if rec != nil {
		out.AuditSeq, out.Audited = rec.Seq, rec.Recorded
	}
	if armed != "" {
		s.disarm(context.WithoutCancel(ctx), armed)
	}
	return out, err
}

func (s *Service) disarm(ctx context.Context, id string) {
	if s.opts.Deadlines == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.opts.Deadlines.Disarm(ctx, id); err != nil {
		s.logAt(journallog.Warning, journallog.Fields{journallog.FieldTxn: id}, "confirm deadline of transaction %s: %v", id, err)
	}
}

// Recovery is what Recover did.
type Recovery struct {
	// Action is "none", "rolled-back" or "failed".
	Action string `json:"action"`
	// Reason is no-journal, owner-alive, not-awaiting-confirm,
	// deadline-not-passed, deadline-passed or interrupted.
	Reason   string                 `json:"reason"`
	Journal  *txn.Journal           `json:"-"`
	Rollback *engine.RollbackResult `json:"rollback,omitempty"`
	// Owner is the lock holder's error when Reason is owner-alive.
	Owner error `json:"-"`
}

// Recover finishes what an interrupted transaction left: if a journal
// exists and no live op-dbus holds the lock, the transaction is rolled
// back, verified and audited (naming the source and client that started
// it). While the journal's owner lives, nothing is done. With
// ifDeadlinePassed it acts only on a transaction that waits for a
// confirmation whose deadline has passed (what the confirm timer runs).
func (s *Service) Recover(ctx context.Context, ifDeadlinePassed bool) (*Recovery, error) {
	first, err := txn.ReadJournal(s.StateDir())
	if err != nil || first == nil {
		return &Recovery{Action: "none", Reason: "no-journal"}, err
	}
	unlock, err := s.dir.Lock()
	if errkind.Is(err, errkind.Locked) {
		return &Recovery{Action: "none", Reason: "owner-alive", Owner: err, Journal: first}, nil
	}
	if err != nil {
		return &Recovery{Action: "failed", Reason: "lock"}, err
	}
	defer unlock()
	j, err := txn.ReadJournal(s.StateDir())
	if err != nil || j == nil {
		return &Recovery{Action: "none", Reason: "no-journal"}, err
	}
	r := &Recovery{Journal: j, Reason: "interrupted"}
	if ifDeadlinePassed {
		switch {
		case j.Phase != txn.PhaseAwaitingConfirm:
			r.Action, r.Reason = "none", "not-awaiting-confirm"
			return r, nil
		case time.Now().Before(j.Deadline):
			r.Action, r.Reason = "none", "deadline-not-passed"
			return r, nil
		}
		r.Reason = "deadline-passed"
	}
	m, closeM, err := s.manager("")
	if err != nil {
		r.Action = "failed"
		return r, err
	}
	defer closeM()
	r.Rollback, err = m.Recover(ctx)
	if err != nil {
		r.Action = "failed"
		return r, errkind.New(errkind.Damaged, err)
	}
	r.Action = "rolled-back"
	if !ifDeadlinePassed {
		// The timer runs `recover --if-deadline-passed` itself and would
		// stop its own unit; everyone else removes the timer.
		s.disarm(ctx, j.ID)
	}
	return r, nil
}

// Commit confirms the transaction waiting for confirmation (in this or
// another process) and waits up to wait for it to acknowledge.
func (s *Service) Commit(wait time.Duration) error { return txn.Commit(s.StateDir(), wait) }

// Snapshot takes a snapshot of the named plugins (every available one when
// none are named) and applies retention, under the lock.
func (s *Service) Snapshot(ctx context.Context, plugins []string, tag string, keep int, maxAge time.Duration) (sn *snapshot.Snapshot, err error) {
	err = s.locked(func(m *txn.Manager) error {
		if sn, err = m.Snapshot(ctx, plugins, tag); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		return m.Prune(keep, maxAge)
	})
	return sn, err
}

// PruneSnapshots applies a retention policy now, recorded in the audit log.
func (s *Service) PruneSnapshots(keep int, maxAge time.Duration) (removed int, err error) {
	err = s.locked(func(m *txn.Manager) error {
		before, err := m.Snapshots.List()
		if err != nil {
			return err
		}
		if err := m.Prune(keep, maxAge); err != nil {
			return err
		}
		after, err := m.Snapshots.List()
		removed = len(before) - len(after)
		return err
	})
	return removed, err
}

// PruneCorruptSnapshots removes (or with dryRun only lists) the snapshot
// manifests that cannot be read, each removal recorded in the audit log.
func (s *Service) PruneCorruptSnapshots(dryRun bool) (list []snapshot.Damaged, err error) {
	err = s.locked(func(m *txn.Manager) (err error) {
		list, err = m.PruneCorrupt(dryRun)
		return err
	})
	return list, err
}

// locked runs fn with the lock held and the transaction manager open.
func (s *Service) locked(fn func(*txn.Manager) error) error {
	unlock, err := s.dir.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	m, closeM, err := s.manager("")
	if err != nil {
		return err
	}
	defer closeM()
	return fn(m)
}

// LastDocument is the document that undoes the last successful apply
// (what `op-dbus rollback` applies).
func (s *Service) LastDocument() (*state.Document, *txn.Last, error) {
	m := &txn.Manager{Dir: s.StateDir(), Engine: s.engine}
	return m.LastDocument(s.engine.Validate)
}

// manager opens the transaction manager over the state directory's
// snapshot store and audit log; the audit log must be healthy, because
// op-dbus changes nothing it cannot record.
func (s *Service) manager(client string) (*txn.Manager, func(), error) {
	if err := s.dir.Ensure(); err != nil {
		return nil, nil, err
	}
	snaps, err := snapshot.Open(s.dir.Snapshots())
	if err != nil {
		return nil, nil, err
	}
	log, err := s.openLog()
	if err != nil {
		return nil, nil, err
	}
	if err := log.Corrupt(); err != nil {
		log.Close()
		return nil, nil, errkind.New(errkind.Damaged, fmt.Errorf("%w; op-dbus changes nothing it cannot record: run `op-dbus audit verify`", err))
	}
	keep := s.opts.SnapshotKeep
	m := &txn.Manager{Dir: s.StateDir(), Engine: s.engine, Snapshots: snaps, Keep: keep, MaxAge: s.opts.SnapshotMaxAge,
		Recorder: &txn.LedgerRecorder{Log: log, Source: s.source, Client: client}, Log: s.opts.Log}
	return m, func() { log.Close() }, nil
}

// openLog opens (creating) the audit log and reports crash repairs.
func (s *Service) openLog() (*ledger.Log, error) {
	if err := s.dir.Ensure(); err != nil {
		return nil, err
	}
	log, err := ledger.Open(s.dir.Audit())
	if err != nil {
		return nil, errkind.New(errkind.Damaged, fmt.Errorf("audit log: %w (op-dbus changes nothing it cannot record)", err))
	}
	for _, r := range log.Repairs() {
		s.logAt(journallog.Warning, nil, "audit log repaired after a crash: %s", r)
	}
	return log, nil
}
