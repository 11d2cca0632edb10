package control

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Errors an apply by plan hash can be refused with.
var (
	ErrUnknownPlan = errkind.Errorf(errkind.UnknownPlan, "unknown plan hash: apply accepts only a plan made by this server (call plan first)")
	ErrStalePlan   = errkind.Errorf(errkind.StalePlan, "stale plan: the live state changed since the plan was made; plan again")
)

// plans are kept per front end: a plan is applied where it was made.
type planKey struct{ source, hash string }

type storedPlan struct {
	doc     *state.Document
	created time.Time
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
	s.plans[planKey{s.source, h}] = &storedPlan{doc: doc, created: time.Now()}
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

// ApplyResult is the outcome of an apply by plan hash.
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

// Apply carries out a plan this front end made, as a transaction, if the
// live state still produces the same plan. client names who asked (the MCP
// client, the API token's name) for the audit log. With confirmWithin it
// returns as soon as the transaction waits for confirmation; the wait goes
// on after the caller's context ends (and, with Options.Deadlines, after
// this process ends).
func (s *Service) Apply(ctx context.Context, planHash, client string, confirmWithin time.Duration) (*ApplyResult, error) {
	s.mu.Lock()
	sp := s.plans[planKey{s.source, planHash}]
	s.mu.Unlock()
	if sp == nil {
		s.Refuse("apply", client, "apply of plan "+planHash+": "+ErrUnknownPlan.Error())
		return nil, ErrUnknownPlan
	}
	type done struct {
		out *Outcome
		err error
	}
	waiting := make(chan time.Time, 1)
	finished := make(chan done, 1)
	// The transaction outlives this call when it waits for confirmation,
	// so it must not die with the caller's context.
	tctx := context.WithoutCancel(ctx)
	go func() {
		out, err := s.Transact(tctx, Request{Kind: "apply", Client: client, Doc: sp.doc, PlanHash: planHash,
			ConfirmWithin: confirmWithin, OnWait: func(deadline time.Time) { waiting <- deadline }})
		if err == nil || out != nil && out.Txn != nil {
			s.mu.Lock()
			delete(s.plans, planKey{s.source, planHash}) // a plan is applied once
			s.mu.Unlock()
		}
		finished <- done{out, err}
	}()
	// Whatever the outcome, the cached state is no longer trustworthy.
	defer s.Invalidate()
	select {
	case deadline := <-waiting:
		s.mu.Lock()
		delete(s.plans, planKey{s.source, planHash})
		s.mu.Unlock()
		return &ApplyResult{Success: true, AwaitingConfirm: true, Deadline: deadline, Verify: engine.Verification{OK: true}}, nil
	case d := <-finished:
		return applyResult(d.out, d.err)
	}
}

func applyResult(out *Outcome, err error) (*ApplyResult, error) {
	if out == nil || out.Txn == nil {
		if err != nil {
			return nil, err
		}
		// Planned under the lock and found nothing to do.
		return &ApplyResult{Success: true, Outcomes: []engine.Outcome{}, Verify: engine.Verification{OK: true}}, nil
	}
	t := out.Txn
	r := &ApplyResult{Success: t.Err() == nil && err == nil, Snapshot: t.Snapshot}
	if res := t.Result; res != nil {
		r.Outcomes, r.Verify, r.Rollback = res.Outcomes, res.Verify, res.Rollback
	}
	if e := firstErr(err, t.Err()); e != nil {
		r.Error = e.Error()
	}
	return r, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
