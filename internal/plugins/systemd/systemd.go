// Package systemd manages units through org.freedesktop.systemd1: start,
// stop, restart, enable, disable, mask, unmask and daemon reload, waiting
// for every job's JobRemoved signal. See README.md.
package systemd

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

const (
	busName    = "org.freedesktop.systemd1"
	objPath    = dbus.ObjectPath("/org/freedesktop/systemd1")
	managerIfc = "org.freedesktop.systemd1.Manager"
	unitIfc    = "org.freedesktop.systemd1.Unit"
	serviceIfc = "org.freedesktop.systemd1.Service"
)

// JobTimeout bounds the wait for one start/stop/restart job.
var JobTimeout = 90 * time.Second

func init() {
	plugin.Register("systemd", func(o plugin.Options) plugin.Plugin { return New(o) })
}

// Plugin is the systemd plugin.
type Plugin struct {
	bus dbusx.Bus

	mu   sync.Mutex
	conn *dbus.Conn // the process's shared connection, never closed here
	sub  *dbusx.Subscription
	jobs *jobWaiter
}

// New returns the plugin for the system manager, or with o.User for the
// calling user's manager on the session bus.
func New(o plugin.Options) *Plugin {
	b := dbusx.System
	if o.User {
		b = dbusx.Session
	}
	return &Plugin{bus: b}
}

func (p *Plugin) Name() string    { return "systemd" }
func (p *Plugin) NewState() any   { return &State{} }
func (p *Plugin) After() []string { return nil }

// Close stops following JobRemoved; the shared connection stays open.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	if p.sub != nil {
		err = p.sub.Close()
	}
	p.conn, p.sub, p.jobs = nil, nil, nil
	return err
}

// connect takes the process's shared connection to the bus, checks the
// manager is there, and routes its JobRemoved signals to waiters. After the
// bus restarted it does so again on the new connection.
func (p *Plugin) connect(ctx context.Context) (*dbus.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.Connected() {
		return p.conn, nil
	}
	if p.sub != nil { // the old connection is gone, and its rules with it
		_ = p.sub.Close()
		p.conn, p.sub, p.jobs = nil, nil, nil
	}
	conn, err := dbusx.Shared(ctx, p.bus)
	if err != nil {
		return nil, err
	}
	ok, err := dbusx.HasName(ctx, conn, busName)
	if err != nil {
		return nil, err
	}
	if !ok {
		hint := "is systemd running as PID 1? for your user manager pass --user"
		if p.bus == dbusx.Session {
			hint = "is `systemd --user` running for this session?"
		}
		return nil, fmt.Errorf("%s is not on the %s (%s)", busName, p.bus, hint)
	}
	jobs := newJobWaiter()
	sub, err := dbusx.Subscribe(ctx, conn, jobs.signal,
		dbusx.Match{Sender: busName, Path: objPath, Interface: managerIfc, Member: "JobRemoved"})
	if err != nil {
		return nil, fmt.Errorf("subscribe to JobRemoved: %w", err)
	}
	// Without Subscribe the manager does not emit JobRemoved to us.
	if err := ManagerSubscribe(ctx, conn); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("systemd Subscribe: %w", err)
	}
	p.conn, p.sub, p.jobs = conn, sub, jobs
	return conn, nil
}

// ManagerSubscribe asks the manager to emit its unit and job signals to
// conn. On a shared connection someone else may have asked already, which
// some systemd versions answer with AlreadySubscribed: that is success.
// Nobody calls Unsubscribe, since others on the connection rely on it; the
// subscription ends with the connection.
func ManagerSubscribe(ctx context.Context, conn *dbus.Conn) error {
	err := dbusx.Call(ctx, conn.Object(busName, objPath), managerIfc+".Subscribe", nil)
	if err != nil && dbusx.ErrorName(err) == "org.freedesktop.systemd1.AlreadySubscribed" {
		return nil
	}
	return err
}

func (p *Plugin) manager(ctx context.Context) (dbus.BusObject, error) {
	conn, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	return conn.Object(busName, objPath), nil
}

// Available implements plugin.Plugin.
func (p *Plugin) Available(ctx context.Context) error {
	_, err := p.connect(ctx)
	return err
}

type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Following string
	Path                                                           dbus.ObjectPath
	JobID                                                          uint32
	JobType                                                        string
	JobPath                                                        dbus.ObjectPath
}

type unitFile struct {
	Path, State string
}

// Query implements plugin.Plugin: every loaded unit (ListUnits) and every
// unit file (ListUnitFiles), plus NeedDaemonReload of loaded units that
// have a file, read concurrently.
func (p *Plugin) Query(ctx context.Context) (any, error) {
	m, err := p.manager(ctx)
	if err != nil {
		return nil, err
	}
	var units []unitStatus
	var files []unitFile
	var uerr, ferr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); uerr = dbusx.Call(ctx, m, managerIfc+".ListUnits", []any{&units}) }()
	go func() { defer wg.Done(); ferr = dbusx.Call(ctx, m, managerIfc+".ListUnitFiles", []any{&files}) }()
	wg.Wait()
	if uerr != nil {
		return nil, fmt.Errorf("systemd: %w", uerr)
	}
	if ferr != nil {
		return nil, fmt.Errorf("systemd: %w", ferr)
	}
	st := &State{Units: make(map[string]*Unit, len(units)+len(files))}
	for _, f := range files {
		name := filepath.Base(f.Path)
		if ValidUnitName(name) != nil {
			continue
		}
		u := &Unit{UnitFileState: f.State}
		setFileState(u, f.State)
		if !IsTemplate(name) {
			u.ActiveState, u.RawActiveState, u.SubState = "inactive", "inactive", "dead"
		}
		st.Units[name] = u
	}
	var reloadCheck []string
	paths := map[string]dbus.ObjectPath{}
	// ListUnitFiles names templates, not their instances; an instance's
	// enablement (getty@tty1.service) is asked for separately.
	instances := map[string]*dbus.Call{}
	for _, us := range units {
		if us.LoadState != "not-found" && strings.Contains(us.Name, "@") && st.Units[us.Name] == nil && ValidUnitName(us.Name) == nil {
			instances[us.Name] = m.GoWithContext(ctx, managerIfc+".GetUnitFileState", 0, make(chan *dbus.Call, 1), us.Name)
		}
	}
	for _, us := range units {
		if us.LoadState == "not-found" || ValidUnitName(us.Name) != nil {
			continue
		}
		u := st.Units[us.Name]
		if c, ok := instances[us.Name]; ok {
			<-c.Done
			var fs string
			if c.Err == nil && c.Store(&fs) == nil && fs != "" {
				u = &Unit{UnitFileState: fs}
				setFileState(u, fs)
				st.Units[us.Name] = u
			}
		}
		if u == nil {
			u = &Unit{}
			st.Units[us.Name] = u
			if us.LoadState == "masked" {
				u.UnitFileState = "masked"
				setFileState(u, "masked")
			}
		} else {
			reloadCheck = append(reloadCheck, us.Name)
			paths[us.Name] = us.Path
		}
		u.RawActiveState, u.SubState = us.ActiveState, us.SubState
		u.ActiveState = normalizeActive(us.ActiveState)
	}
	if err := p.readNeedReload(ctx, st, reloadCheck, paths); err != nil {
		return nil, err
	}
	return st, nil
}

// readNeedReload fetches NeedDaemonReload with bounded concurrency over the
// one connection; godbus pipelines the calls.
func (p *Plugin) readNeedReload(ctx context.Context, st *State, names []string, paths map[string]dbus.ObjectPath) error {
	conn, err := p.connect(ctx)
	if err != nil {
		return err
	}
	calls := make([]*dbus.Call, len(names))
	ctx, cancel := dbusx.WithTimeout(ctx)
	defer cancel()
	for i, n := range names {
		obj := conn.Object(busName, paths[n])
		calls[i] = obj.GoWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, make(chan *dbus.Call, 1), unitIfc, "NeedDaemonReload")
	}
	for i, c := range calls {
		<-c.Done
		if c.Err != nil {
			// A unit can vanish between ListUnits and Get (a finished
			// transient unit); that is not an error of the query.
			if dbusx.ErrorName(c.Err) == "org.freedesktop.DBus.Error.UnknownObject" {
				continue
			}
			if ctx.Err() != nil {
				return fmt.Errorf("systemd: reading NeedDaemonReload: %w", ctx.Err())
			}
			continue
		}
		var v dbus.Variant
		if err := c.Store(&v); err == nil {
			if b, ok := v.Value().(bool); ok && b {
				st.Units[names[i]].NeedDaemonReload = true
			}
		}
	}
	return nil
}

func setFileState(u *Unit, s string) {
	t, f := true, false
	switch s {
	case "enabled", "enabled-runtime":
		u.Enabled, u.Masked = &t, &f
	case "disabled":
		u.Enabled, u.Masked = &f, &f
	case "masked", "masked-runtime":
		u.Masked = &t
	default:
		// static, indirect, generated, transient, alias, linked: enablement
		// is not the unit's own to change.
		u.Masked = &f
	}
}

// normalizeActive maps systemd's ActiveState onto the two declarable ones:
// a unit on its way up or up is active; down, failed or going down is not.
func normalizeActive(s string) string {
	switch s {
	case "active", "reloading", "activating", "refreshing":
		return "active"
	}
	return "inactive"
}

// Apply implements plugin.Plugin.
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	var d opData
	if err := json.Unmarshal(op.Data, &d); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	m, err := p.manager(ctx)
	if err != nil {
		return err
	}
	files := []string{d.Unit}
	switch d.Kind {
	case kindUnmask:
		return p.fileCall(ctx, m, "UnmaskUnitFiles", d.Unit, files, false)
	case kindMask:
		return p.fileCall(ctx, m, "MaskUnitFiles", d.Unit, files, false, false)
	case kindDisable:
		return p.fileCall(ctx, m, "DisableUnitFiles", d.Unit, files, false)
	case kindEnable:
		var carries bool
		var changes []fileChange
		if err := dbusx.Call(ctx, m, managerIfc+".EnableUnitFiles", []any{&carries, &changes}, files, false, false); err != nil {
			return p.explain(err, "enable", d.Unit)
		}
		if !carries && len(changes) == 0 {
			return fmt.Errorf("enable %s: the unit has no [Install] section (WantedBy=...), so there is nothing to enable", d.Unit)
		}
		return nil
	case kindReload:
		return p.reload(ctx, m)
	case kindStart, kindStop, kindRestart:
		return p.job(ctx, m, d.Kind, d.Unit)
	}
	return fmt.Errorf("unknown op kind %q", d.Kind)
}

type fileChange struct {
	Type, File, Dest string
}

func (p *Plugin) fileCall(ctx context.Context, m dbus.BusObject, method, unit string, args ...any) error {
	var changes []fileChange
	if err := dbusx.Call(ctx, m, managerIfc+"."+method, []any{&changes}, args...); err != nil {
		return p.explain(err, strings.ToLower(strings.TrimSuffix(method, "UnitFiles")), unit)
	}
	return nil
}

// reload runs Reload and waits until the manager has finished reloading:
// the method returns when the reload is done on systemd >= 232.
func (p *Plugin) reload(ctx context.Context, m dbus.BusObject) error {
	if err := dbusx.Call(ctx, m, managerIfc+".Reload", nil); err != nil {
		return p.explain(err, "daemon-reload", "")
	}
	return nil
}

// job starts, stops or restarts a unit and waits for its JobRemoved.
func (p *Plugin) job(ctx context.Context, m dbus.BusObject, kind, unit string) error {
	method := map[string]string{kindStart: "StartUnit", kindStop: "StopUnit", kindRestart: "RestartUnit"}[kind]
	p.mu.Lock()
	jobs := p.jobs
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, JobTimeout)
	defer cancel()
	// Register interest before the call: the job can finish before the
	// reply reaches us.
	jobs.hold()
	defer jobs.release()
	var path dbus.ObjectPath
	err := dbusx.Call(ctx, m, managerIfc+"."+method, []any{&path}, unit, "replace")
	if err != nil && kind != kindStop && dbusx.ErrorName(err) == "org.freedesktop.systemd1.NoSuchUnit" {
		// A unit file written after the manager last looked: reload once.
		if rerr := p.reload(ctx, m); rerr == nil {
			err = dbusx.Call(ctx, m, managerIfc+"."+method, []any{&path}, unit, "replace")
		}
	}
	if err != nil {
		return p.explain(err, kind, unit)
	}
	result, err := jobs.wait(ctx, path)
	if err != nil {
		return fmt.Errorf("%s %s: waiting for job %s: %w (the job may still be running; see `systemctl status %s`)", kind, unit, path, err, unit)
	}
	if result != "done" {
		return fmt.Errorf("%s %s: job %s (%s)", kind, unit, result, p.unitStatus(ctx, unit))
	}
	return nil
}

// unitStatus describes a unit for an error message: its states, result and
// main process exit status.
func (p *Plugin) unitStatus(ctx context.Context, unit string) string {
	conn, err := p.connect(ctx)
	if err != nil {
		return "status unknown"
	}
	m := conn.Object(busName, objPath)
	var path dbus.ObjectPath
	if err := dbusx.Call(ctx, m, managerIfc+".GetUnit", []any{&path}, unit); err != nil {
		return "unit not loaded"
	}
	obj := conn.Object(busName, path)
	props, err := dbusx.GetAll(ctx, obj, unitIfc)
	if dbusx.Needed(err, "ActiveState", "SubState") != nil {
		return "status unknown"
	}
	s := fmt.Sprintf("unit is %v/%v", props["ActiveState"].Value(), props["SubState"].Value())
	if strings.HasSuffix(unit, ".service") {
		// Result and ExecMainStatus are each shown only when read.
		if sp, err := dbusx.GetAll(ctx, obj, serviceIfc); dbusx.Needed(err) == nil {
			if r, ok := sp["Result"].Value().(string); ok && r != "success" {
				s += ", result " + r
			}
			if code, ok := sp["ExecMainStatus"].Value().(int32); ok && code != 0 {
				s += fmt.Sprintf(", main process exited with status %d", code)
			}
		}
	}
	return s + "; see `journalctl -u " + unit + "`"
}

func (p *Plugin) explain(err error, verb, unit string) error {
	what := verb
	if unit != "" {
		what += " " + unit
	}
	if dbusx.IsAccessDenied(err) {
		return fmt.Errorf("%s: access denied (run as root, or grant the org.freedesktop.systemd1.manage-units / manage-unit-files polkit action): %w", what, err)
	}
	switch dbusx.ErrorName(err) {
	case "org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.DBus.Error.FileNotFound":
		return fmt.Errorf("%s: no such unit (is the unit file installed where the manager looks? `systemctl%s cat %s`)", what, p.userFlag(), unit)
	case "org.freedesktop.systemd1.UnitMasked":
		return fmt.Errorf("%s: the unit is masked (add \"masked\": false to unmask it)", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (p *Plugin) userFlag() string {
	if p.bus == dbusx.Session {
		return " --user"
	}
	return ""
}

// jobWaiter routes JobRemoved signals to the goroutines waiting for them.
// Results that arrive before anyone waits are kept while any job call is
// in flight (hold/release), so a fast job is never missed.
type jobWaiter struct {
	mu      sync.Mutex
	waiting map[dbus.ObjectPath]chan string
	early   map[dbus.ObjectPath]string
	holders int
}

func newJobWaiter() *jobWaiter {
	return &jobWaiter{waiting: map[dbus.ObjectPath]chan string{}, early: map[dbus.ObjectPath]string{}}
}

// signal takes one JobRemoved (the subscription has filtered out every
// other signal of the shared connection). It never blocks.
func (w *jobWaiter) signal(s *dbus.Signal) {
	if len(s.Body) < 4 {
		return
	}
	path, _ := s.Body[1].(dbus.ObjectPath)
	result, _ := s.Body[3].(string)
	w.deliver(path, result)
}

func (w *jobWaiter) hold() {
	w.mu.Lock()
	w.holders++
	w.mu.Unlock()
}

func (w *jobWaiter) release() {
	w.mu.Lock()
	w.holders--
	if w.holders == 0 {
		clear(w.early)
	}
	w.mu.Unlock()
}

func (w *jobWaiter) deliver(path dbus.ObjectPath, result string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.waiting[path]; ok {
		ch <- result
		delete(w.waiting, path)
		return
	}
	if w.holders > 0 {
		w.early[path] = result
	}
}

func (w *jobWaiter) wait(ctx context.Context, path dbus.ObjectPath) (string, error) {
	w.mu.Lock()
	if r, ok := w.early[path]; ok {
		delete(w.early, path)
		w.mu.Unlock()
		return r, nil
	}
	ch := make(chan string, 1)
	w.waiting[path] = ch
	w.mu.Unlock()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.waiting, path)
		w.mu.Unlock()
		return "", ctx.Err()
	}
}
