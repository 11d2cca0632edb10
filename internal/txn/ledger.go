package txn

import (
	"encoding/json"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/ledger"
)

// LedgerRecorder writes transaction records to the audit log; every front
// end (CLI, daemon, API, MCP) records through it with its own source.
type LedgerRecorder struct {
	Log    *ledger.Log
	Source string // cli, daemon, api, mcp
	Client string // who asked, for ledger.Actor.Client
	// Seq is the sequence number of the last entry recorded, when Recorded.
	Seq      uint64
	Recorded bool
}

// Record implements Recorder.
func (r *LedgerRecorder) Record(rec Record) error {
	e := ledger.Entry{
		Time: time.Now().UTC(), Kind: rec.Kind, Source: r.Source, Actor: ledger.LocalActor(r.Client),
		Plugins: rec.Plugins, Before: rec.Before, After: rec.After, Document: rec.Document,
		Verified: rec.Verified, Result: rec.Result, Message: rec.Message,
	}
	e.Ops = append(opRecords(rec.Outcomes, ""), opRecords(rec.Undo, "undo ")...)
	extra := map[string]string{}
	if rec.Snapshot != "" {
		extra["snapshot"] = rec.Snapshot
	}
	if rec.StartedBy != "" || rec.StartedFor != "" {
		// A recovery runs in another process (the next command, the
		// confirm timer): name whose transaction it undid.
		extra["started_by"], extra["started_for"] = rec.StartedBy, rec.StartedFor
	}
	if len(extra) > 0 {
		e.Extra, _ = json.Marshal(extra)
	}
	seq, err := r.Log.Append(e)
	if err == nil {
		r.Seq, r.Recorded = seq, true
	}
	return err
}

func opRecords(os []engine.Outcome, prefix string) []ledger.OpRecord {
	var out []ledger.OpRecord
	for _, o := range os {
		out = append(out, ledger.OpRecord{ID: o.Op.ID, Plugin: o.Op.Plugin, Description: prefix + o.Op.Description,
			Status: string(o.Status), Error: o.Error, Data: o.Op.Data})
	}
	return out
}
