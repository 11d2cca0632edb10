package dbus

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// rig drives the plugin through the real engine: plan, apply, verify and
// roll back, as the CLI does.
type rig struct {
	t *testing.T
	p *Plugin
	e *engine.Engine
}

func newRig(t *testing.T, p *Plugin) *rig {
	t.Helper()
	t.Cleanup(func() { p.Close() })
	e := engine.New([]plugin.Plugin{p})
	e.VerifyDelay = 50 * time.Millisecond
	return &rig{t: t, p: p, e: e}
}

func (r *rig) doc(objects ...string) *state.Document {
	r.t.Helper()
	d, err := state.Decode([]byte(`{"version":1,"plugins":{"dbus":{"objects":[`+strings.Join(objects, ",")+`]}}}`),
		state.FormatJSON, r.e.Types(), r.e.Validate)
	if err != nil {
		r.t.Fatalf("decode: %v", err)
	}
	return d
}

func (r *rig) plan(d *state.Document) (*engine.Plan, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return r.e.Plan(ctx, d)
}

func (r *rig) mustPlan(d *state.Document) *engine.Plan {
	r.t.Helper()
	pl, err := r.plan(d)
	if err != nil {
		r.t.Fatalf("plan: %v", err)
	}
	return pl
}

// apply plans and applies d, failing the test unless it succeeds.
func (r *rig) apply(d *state.Document) *engine.Result {
	r.t.Helper()
	res := r.tryApply(d)
	if !res.Success {
		r.t.Fatalf("apply: %v %+v", res.Err, res)
	}
	return res
}

func (r *rig) tryApply(d *state.Document) *engine.Result {
	r.t.Helper()
	pl := r.mustPlan(d)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return r.e.Apply(ctx, d, pl)
}

// query is what the plugin reads for d, as a document fragment.
func (r *rig) query(d *state.Document) string {
	r.t.Helper()
	st, err := r.p.QueryFor(context.Background(), d.Plugins["dbus"])
	if err != nil {
		r.t.Fatalf("query: %v", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

// requery decodes a query result back into a document.
func (r *rig) requery(q string) *state.Document {
	r.t.Helper()
	d, err := state.Decode([]byte(`{"version":1,"plugins":{"dbus":`+q+`}}`), state.FormatJSON, r.e.Types(), r.e.Validate)
	if err != nil {
		r.t.Fatalf("query result is not a valid document: %v\n%s", err, q)
	}
	return d
}

func opIDs(pl *engine.Plan) []string {
	var out []string
	for _, op := range pl.Ops {
		out = append(out, op.ID)
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error does not say %q:\n%v", p, err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line:\n%v", err)
	}
}
