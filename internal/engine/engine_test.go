package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// memPlugin is an in-memory plugin of our own contract, to test the engine's
// ordering, verification and rollback logic in isolation. (Backends are
// tested against real daemons in the plugins' own tests.)
type memPlugin struct {
	name  string
	after []string

	mu       sync.Mutex
	values   map[string]string
	failOn   map[string]bool   // Apply of this key fails
	lie      map[string]string // Apply of this key sets this value instead
	applied  []string
	inFlight int
	maxPar   int
	delay    time.Duration
}

type memState struct {
	Values map[string]string `json:"values,omitempty"`
}

func newMem(name string, vals map[string]string) *memPlugin {
	return &memPlugin{name: name, values: vals, failOn: map[string]bool{}, lie: map[string]string{}}
}

func (m *memPlugin) Name() string                    { return m.name }
func (m *memPlugin) NewState() any                   { return &memState{} }
func (m *memPlugin) Available(context.Context) error { return nil }
func (m *memPlugin) After() []string                 { return m.after }

func (m *memPlugin) Query(context.Context) (any, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &memState{Values: map[string]string{}}
	for k, v := range m.values {
		s.Values[k] = v
	}
	return s, nil
}

func (m *memPlugin) Plan(cur, des any) ([]plugin.Op, error) {
	c, d := cur.(*memState), des.(*memState)
	keys := make([]string, 0, len(d.Values))
	for k := range d.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ops []plugin.Op
	for _, k := range keys {
		if c.Values[k] != d.Values[k] {
			b, _ := json.Marshal([2]string{k, d.Values[k]})
			ops = append(ops, plugin.Op{ID: m.name + "/" + k, Item: k, Description: "set " + k, Data: b, Reversible: true,
				Changes: []plugin.Change{{Path: k, Current: c.Values[k], Desired: d.Values[k]}}})
		}
	}
	return ops, nil
}

func (m *memPlugin) Apply(_ context.Context, op plugin.Op) error {
	var kv [2]string
	_ = json.Unmarshal(op.Data, &kv)
	m.mu.Lock()
	m.inFlight++
	m.maxPar = max(m.maxPar, m.inFlight)
	m.mu.Unlock()
	time.Sleep(m.delay)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inFlight--
	m.applied = append(m.applied, m.name+"/"+kv[0]+"="+kv[1])
	if kv[0] == "panic" {
		panic("boom")
	}
	if m.failOn[kv[0]] && kv[1] != m.values[kv[0]] && !strings.HasPrefix(kv[1], "orig") {
		m.values[kv[0]] = "half-done"
		return errors.New("backend refused " + kv[0])
	}
	if v, ok := m.lie[kv[0]]; ok {
		m.values[kv[0]] = v
		return nil
	}
	m.values[kv[0]] = kv[1]
	return nil
}

func (m *memPlugin) Subset(st any, items []string) any {
	s := st.(*memState)
	out := &memState{Values: map[string]string{}}
	for _, it := range items {
		if v, ok := s.Values[it]; ok {
			out.Values[it] = v
		}
	}
	return out
}

func doc(parts map[string]map[string]string) *state.Document {
	d := &state.Document{Version: 1, Plugins: map[string]any{}}
	for n, v := range parts {
		d.Plugins[n] = &memState{Values: v}
	}
	return d
}

func TestApplyOrdersAcrossPlugins(t *testing.T) {
	a := newMem("a", map[string]string{"x": "orig"})
	b := newMem("b", map[string]string{"y": "orig"})
	b.after = []string{"a"}
	e := New([]plugin.Plugin{b, a})
	var seen []string
	evCtx := WithEvents(context.Background(), func(ev Event) {
		if ev.Done && ev.Op.ID != "" {
			seen = append(seen, ev.Op.ID)
		}
	})
	d := doc(map[string]map[string]string{"a": {"x": "new"}, "b": {"y": "new"}})
	plan, err := e.Plan(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Ops) != 2 || plan.Ops[0].ID != "a/x" || plan.Ops[1].DependsOn[0] != "a/x" {
		t.Fatalf("plan %+v", plan.Ops)
	}
	res := e.Apply(evCtx, d, plan)
	if !res.Success {
		t.Fatalf("apply failed: %v", res.Err)
	}
	if strings.Join(seen, ",") != "a/x,b/y" {
		t.Fatalf("order %v", seen)
	}
	again, _ := e.Plan(context.Background(), d)
	if !again.Empty() {
		t.Fatalf("second plan not empty: %+v", again.Ops)
	}
}

func TestIndependentOpsRunConcurrently(t *testing.T) {
	vals, want := map[string]string{}, map[string]string{}
	for i := range 8 {
		vals[fmt.Sprint("k", i)] = "orig"
		want[fmt.Sprint("k", i)] = "new"
	}
	a := newMem("a", vals)
	a.delay = 50 * time.Millisecond
	e := New([]plugin.Plugin{a})
	d := doc(map[string]map[string]string{"a": want})
	plan, _ := e.Plan(context.Background(), d)
	if res := e.Apply(context.Background(), d, plan); !res.Success {
		t.Fatal(res.Err)
	}
	if a.maxPar < 2 {
		t.Fatalf("independent ops ran one at a time (max in flight %d)", a.maxPar)
	}
}

func TestFailedOpRollsBackTouchedItemsOnly(t *testing.T) {
	a := newMem("a", map[string]string{"x": "orig-x", "bad": "orig-bad", "other": "orig-other"})
	b := newMem("b", map[string]string{"y": "orig-y"})
	b.after = []string{"a"}
	a.failOn["bad"] = true
	e := New([]plugin.Plugin{a, b})
	d := doc(map[string]map[string]string{"a": {"x": "new", "bad": "new"}, "b": {"y": "new"}})
	plan, _ := e.Plan(context.Background(), d)
	res := e.Apply(context.Background(), d, plan)
	if res.Success || res.Err == nil || !strings.Contains(res.Err.Error(), "backend refused bad") {
		t.Fatalf("want failure naming the op, got %+v", res.Err)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback not verified: %+v", res.Rollback)
	}
	for k, v := range map[string]string{"x": "orig-x", "bad": "orig-bad", "other": "orig-other"} {
		if a.values[k] != v {
			t.Errorf("a.%s = %q after rollback, want %q", k, a.values[k], v)
		}
	}
	// b runs after a, so its op was skipped and never touched.
	if b.values["y"] != "orig-y" || len(b.applied) != 0 {
		t.Errorf("b was touched: %v", b.applied)
	}
	var statuses []string
	for _, o := range res.Outcomes {
		statuses = append(statuses, o.Op.ID+":"+string(o.Status))
	}
	if !strings.Contains(strings.Join(statuses, " "), "b/y:skipped") {
		t.Errorf("outcomes %v", statuses)
	}
}

func TestVerificationFailureRollsBack(t *testing.T) {
	a := newMem("a", map[string]string{"x": "orig"})
	a.lie["x"] = "something-else"
	e := New([]plugin.Plugin{a})
	e.VerifyDelay = time.Millisecond
	d := doc(map[string]map[string]string{"a": {"x": "new"}})
	plan, _ := e.Plan(context.Background(), d)
	res := e.Apply(context.Background(), d, plan)
	if res.Success {
		t.Fatal("apply claimed success though the value never took")
	}
	if len(res.Verify.Mismatches) != 1 || res.Verify.Mismatches[0].Path != "x" || res.Verify.Mismatches[0].Desired != "new" {
		t.Fatalf("mismatches %+v", res.Verify.Mismatches)
	}
	// The lying backend keeps lying during rollback: it must be reported.
	if res.Rollback == nil || res.Rollback.Verify.OK || len(res.Rollback.NotUndone) != 1 {
		t.Fatalf("rollback should report what it could not undo: %+v", res.Rollback)
	}
}

func TestPanicFailsOpNotEngine(t *testing.T) {
	a := newMem("a", map[string]string{"panic": "orig"})
	e := New([]plugin.Plugin{a})
	d := doc(map[string]map[string]string{"a": {"panic": "new"}})
	plan, _ := e.Plan(context.Background(), d)
	res := e.Apply(context.Background(), d, plan)
	if res.Success || !strings.Contains(res.Err.Error(), "panicked") {
		t.Fatalf("got %v", res.Err)
	}
}

func TestAfterCycleIsAnError(t *testing.T) {
	a := newMem("a", map[string]string{"x": "1"})
	b := newMem("b", map[string]string{"y": "1"})
	a.after, b.after = []string{"b"}, []string{"a"}
	e := New([]plugin.Plugin{a, b})
	_, err := e.Plan(context.Background(), doc(map[string]map[string]string{"a": {"x": "2"}}))
	if err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("want cycle error, got %v", err)
	}
}

func TestCancelledApplyStillRollsBack(t *testing.T) {
	a := newMem("a", map[string]string{"x": "orig", "bad": "orig-b"})
	a.failOn["bad"] = true
	e := New([]plugin.Plugin{a})
	d := doc(map[string]map[string]string{"a": {"x": "new", "bad": "new"}})
	plan, _ := e.Plan(context.Background(), d)
	ctx, cancel := context.WithCancel(context.Background())
	ctx = WithEvents(ctx, func(ev Event) {
		if ev.Done && ev.Op.ID == "a/bad" {
			cancel()
		}
	})
	res := e.Apply(ctx, d, plan)
	if res.Success || res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback after cancel: %+v", res.Rollback)
	}
	if a.values["x"] != "orig" || a.values["bad"] != "orig-b" {
		t.Fatalf("values after rollback %v", a.values)
	}
}

// probingMem fails its probe while key "link" has value "broken", the way a
// network plugin's ping fails after a wrong address.
type probingMem struct{ *memPlugin }

func (p probingMem) Probe(context.Context, any) ([]plugin.Change, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.values["link"] == "broken" {
		return []plugin.Change{{Path: "probes[0] ping 10.0.0.2", Desired: "reply", Current: "no reply"}}, nil
	}
	return nil, nil
}

func TestFailedProbeFailsVerificationAndRollsBack(t *testing.T) {
	a := probingMem{newMem("a", map[string]string{"link": "ok"})}
	e := New([]plugin.Plugin{a})
	e.VerifyDelay = time.Millisecond
	d := doc(map[string]map[string]string{"a": {"link": "broken"}})
	plan, _ := e.Plan(context.Background(), d)
	res := e.Apply(context.Background(), d, plan)
	if res.Success {
		t.Fatal("apply succeeded though the probe failed")
	}
	if len(res.Verify.Mismatches) != 1 || res.Verify.Mismatches[0].Item != "probes" || res.Verify.Mismatches[0].Current != "no reply" {
		t.Fatalf("mismatches %+v", res.Verify.Mismatches)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback %+v", res.Rollback)
	}
	if got := a.values["link"]; got != "ok" {
		t.Fatalf("after rollback link = %q, want ok", got)
	}
	// Fields match and the probe passes: success.
	d = doc(map[string]map[string]string{"a": {"link": "fine"}})
	plan, _ = e.Plan(context.Background(), d)
	if res := e.Apply(context.Background(), d, plan); !res.Success {
		t.Fatalf("apply with a passing probe failed: %v", res.Err)
	}
}
