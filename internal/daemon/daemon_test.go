package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

// fake is an in-memory plugin with one value.
type fake struct {
	mu      sync.Mutex
	value   string
	queries atomic.Int64
	fail    bool
}

type fakeState struct {
	Value *string `json:"value,omitempty"`
}

func (f *fake) Name() string                    { return "fake" }
func (f *fake) NewState() any                   { return &fakeState{} }
func (f *fake) Available(context.Context) error { return nil }
func (f *fake) After() []string                 { return nil }
func (f *fake) Subset(st any, _ []string) any   { return st }
func (f *fake) set(v string)                    { f.mu.Lock(); f.value = v; f.mu.Unlock() }
func (f *fake) get() string                     { f.mu.Lock(); defer f.mu.Unlock(); return f.value }

func (f *fake) Query(context.Context) (any, error) {
	f.queries.Add(1)
	v := f.get()
	return &fakeState{Value: &v}, nil
}

func (f *fake) Plan(cur, des any) ([]plugin.Op, error) {
	c, d := cur.(*fakeState), des.(*fakeState)
	if d.Value == nil || (c.Value != nil && *c.Value == *d.Value) {
		return nil, nil
	}
	return []plugin.Op{{ID: "fake/set", Item: "value", Description: "set value", Reversible: true,
		Data:    plugin.MustData(*d.Value),
		Changes: []plugin.Change{{Path: "value", Desired: *d.Value, Current: *c.Value}}}}, nil
}

func (f *fake) Apply(_ context.Context, op plugin.Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("refused")
	}
	return json.Unmarshal(op.Data, &f.value)
}

// events collects the daemon's JSON lines.
type events struct {
	ch chan map[string]any
	w  *io.PipeWriter
}

func newEvents(t *testing.T) *events {
	r, w := io.Pipe()
	e := &events{ch: make(chan map[string]any, 100000), w: w}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				e.ch <- m
			}
		}
	}()
	t.Cleanup(func() { w.Close() })
	return e
}

func (e *events) wait(t *testing.T, name string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-e.ch:
			if m["event"] == name && (ok == nil || ok(m)) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q event", name)
		}
	}
}

func start(t *testing.T, f *fake, doc string, opts Options) (*Daemon, *events) {
	t.Helper()
	dir := t.TempDir()
	opts.StatePath = filepath.Join(dir, "host.json")
	opts.StateDir = filepath.Join(dir, "state")
	opts.NoWatch = true
	opts.FilePoll = -1
	if err := os.WriteFile(opts.StatePath, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := newEvents(t)
	opts.Events = ev.w
	opts.Log = func(format string, args ...any) { t.Logf(format, args...) }
	d, err := New(control.New(control.Options{StateDir: opts.StateDir, Engine: engine.New([]plugin.Plugin{f})}).As("daemon"), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		d.Wait()
	})
	ev.wait(t, "ready", nil)
	return d, ev
}

const docA = `{"version":1,"plugins":{"fake":{"value":"a"}}}`

// A flood of events is coalesced into a few queries, memory stays flat,
// and the final state is the one reported.
func TestFloodCoalescesAndKeepsFinalState(t *testing.T) {
	f := &fake{value: "a"}
	d, ev := start(t, f, docA, Options{})
	before := f.queries.Load()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if g == 9 && i == 999 {
					f.set("b") // the last event carries the change
				}
				d.Changed("fake")
			}
		}()
	}
	wg.Wait()
	m := ev.wait(t, "drift", nil)
	if !strings.Contains(strings.Join(toStrings(m["changes"]), ""), `value desired "a", current "b"`) {
		t.Errorf("drift event: %v", m)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	if n := f.queries.Load() - before; n > 100 {
		t.Errorf("10000 events caused %d queries; want them coalesced", n)
	}
	if grow := int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc); grow > 4<<20 {
		t.Errorf("heap grew %d bytes over a flood of 10000 events", grow)
	}
	if st := d.Status(); st.Items["fake"] != 1 {
		t.Errorf("status: %+v", st)
	}
	f.set("a")
	d.Changed("fake")
	ev.wait(t, "in_sync", nil)
}

func TestReloadInvalidKeepsOld(t *testing.T) {
	f := &fake{value: "a"}
	d, ev := start(t, f, docA, Options{})
	if err := os.WriteFile(d.opts.StatePath, []byte(`{"version":1,"plugins":{"fake":{"valu":"a"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Reload()
	m := ev.wait(t, "reload", nil)
	if m["ok"] != false {
		t.Fatalf("invalid document accepted: %v", m)
	}
	// The old document still rules: "b" is drift.
	f.set("b")
	d.Changed("fake")
	ev.wait(t, "drift", nil)
	if err := os.WriteFile(d.opts.StatePath, []byte(`{"version":1,"plugins":{"fake":{"value":"b"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Reload()
	ev.wait(t, "reload", func(m map[string]any) bool { return m["ok"] == true })
	ev.wait(t, "in_sync", nil)
}

func TestEnforceCorrectsAndBacksOff(t *testing.T) {
	f := &fake{value: "a"}
	d, ev := start(t, f, docA, Options{Mode: ModeEnforce, MaxFailures: 2})
	f.set("b")
	d.Changed("fake")
	if m := ev.wait(t, "correction", nil); m["result"] != "success" {
		t.Fatalf("correction: %v", m)
	}
	if f.get() != "a" {
		t.Fatalf("not corrected: %q", f.get())
	}
	f.mu.Lock()
	f.fail, f.value = true, "c"
	f.mu.Unlock()
	d.Changed("fake")
	for i := 0; i < 2; i++ {
		if m := ev.wait(t, "correction", nil); m["result"] != "failed" {
			t.Fatalf("correction %d: %v", i, m)
		}
	}
	ev.wait(t, "backoff", nil)
}

func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if ok, err := Notify("READY=1"); !ok || err != nil {
		t.Fatalf("Notify: %v %v", ok, err)
	}
	buf := make([]byte, 64)
	_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("got %q %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify("READY=1"); ok || err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v %v", ok, err)
	}
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "")
	if iv, ok := WatchdogInterval(); !ok || iv != time.Second {
		t.Errorf("WatchdogInterval = %v %v", iv, ok)
	}
	t.Setenv("WATCHDOG_PID", "1")
	if _, ok := WatchdogInterval(); ok && os.Getpid() != 1 {
		t.Errorf("watchdog meant for another pid accepted")
	}
}

func TestUnitPath(t *testing.T) {
	for in, want := range map[string]string{
		"demo-a.service":  "/org/freedesktop/systemd1/unit/demo_2da_2eservice",
		"2x.service":      "/org/freedesktop/systemd1/unit/_32x_2eservice",
		"a@b_c.socket":    "/org/freedesktop/systemd1/unit/a_40b_5fc_2esocket",
		"dbus.service":    "/org/freedesktop/systemd1/unit/dbus_2eservice",
		"getty@tty1.serv": "/org/freedesktop/systemd1/unit/getty_40tty1_2eserv",
	} {
		if got := string(unitPath(in)); got != want {
			t.Errorf("unitPath(%q) = %s, want %s", in, got, want)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, x := range l {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// A document that names no plugins (the packaged default) starts the daemon:
// nothing is queried or changed, and a reload to a real document takes over.
func TestEmptyDocumentServesNothing(t *testing.T) {
	f := &fake{value: "a"}
	d, ev := start(t, f, `{"version":1,"plugins":{}}`, Options{Mode: ModeEnforce})
	if n := f.queries.Load(); n != 0 {
		t.Errorf("an empty document queried the plugin %d times", n)
	}
	if st := d.Status(); len(st.Items) != 0 {
		t.Errorf("status of an empty document: %+v", st)
	}
	if err := os.WriteFile(d.opts.StatePath, []byte(`{"version":1,"plugins":{"fake":{"value":"b"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Reload()
	ev.wait(t, "reload", func(m map[string]any) bool { return m["ok"] == true })
	ev.wait(t, "correction", nil)
	if v := f.get(); v != "b" {
		t.Errorf("value after reload in enforce mode: %q", v)
	}
}
