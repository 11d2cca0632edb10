// Package confirmtimer makes the host's service manager enforce the deadline
// of a transaction that waits for confirmation (apply --confirm-within, the
// MCP apply), so the deadline holds even when the applying process dies.
//
// Arm registers two transient units with systemd's Manager API
// (org.freedesktop.systemd1, StartTransientUnit): a timer,
// op-dbus-confirm-ID.timer, that elapses at the deadline, and the oneshot
// service it starts, op-dbus-confirm-ID.service, which runs the given command,
// normally `op-dbus recover --if-deadline-passed --state-dir DIR [--user]
// [--ovsdb ADDR]` (RecoverArgv) with the bus variables of the applying process
// (Env). That command does nothing while the applying process lives (it holds
// the state directory's lock and handles its own deadline) or once the journal
// has moved on; otherwise it rolls the transaction back.
//
// # How it is meant to be used
//
//   - With --user, connect to the user's manager on the session bus; without,
//     to the system manager on the system bus (Bus). Check Available first: it
//     returns an *UnavailableError (errors.Is ErrUnavailable) where no systemd
//     answers on that bus, and the caller then refuses --confirm-within unless
//     the in-process wait was asked for explicitly.
//   - Arm once the journal has reached the awaiting-confirm phase, with the
//     journal's ID and Deadline.
//   - Disarm on commit, and after a rollback has completed (by the applying
//     process at its deadline or by a recovery). Disarm needs only the
//     transaction ID, so `op-dbus commit`, which runs in another process than
//     the apply, can call it. A timer left armed by mistake is harmless: its
//     command checks the current journal before it acts.
//
// The timer is not persistent: transient units end with the manager, so after
// a reboot the journal is found, as before, by the next op-dbus run.
//
// # The D-Bus properties used (checked against systemd 252)
//
// Timer: Description s; TimersMonotonic a(st) [("OnActiveSec", µs until the
// deadline)], which elapses however the wall clock is set; TimersCalendar
// a(ss) [("OnCalendar", "YYYY-MM-DD HH:MM:SS UTC")], the deadline rounded up to
// the second, which catches a wall clock stepped back after arming (the
// command compares the journal's wall-clock deadline); AccuracyUSec t (1 s,
// instead of the default minute); RemainAfterElapse b false, so the timer
// unloads after it ran. Service, as the aux unit of the same call: Description
// s; Type s "oneshot"; ExecStart a(sasb) [(argv[0], argv, false)]; Environment
// as. The timer starts the service of the same name, so it needs no Unit
// property.
//
// Every call has a timeout (CallTimeout, or the context's earlier deadline)
// and is sent with NoAutoStart: a bus that lists systemd1 as activatable
// without running it (Debian's system bus without systemd as PID 1) is
// reported as unavailable instead of trying to start it.
package confirmtimer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
)

const (
	// Prefix starts both unit names.
	Prefix = "op-dbus-confirm-"
	// CallTimeout bounds each D-Bus call.
	CallTimeout = 10 * time.Second
	// Accuracy is the timer's AccuracyUSec: it elapses within this much
	// after the deadline, never before.
	Accuracy = time.Second

	systemdName  = "org.freedesktop.systemd1"
	systemdPath  = dbus.ObjectPath("/org/freedesktop/systemd1")
	managerIface = "org.freedesktop.systemd1.Manager"
	unitIface    = "org.freedesktop.systemd1.Unit"
)

// ErrUnavailable matches (errors.Is) every *UnavailableError.
var ErrUnavailable = errors.New("no systemd service manager on this bus")

// UnavailableError says that no systemd service manager answers on the bus,
// so no timer can be armed there.
type UnavailableError struct {
	Why string // e.g. "org.freedesktop.systemd1 has no owner"
	Err error  // the D-Bus error behind it, if any
}

func (e *UnavailableError) Error() string {
	s := "confirm timer: " + ErrUnavailable.Error() + " (" + e.Why + ")"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }
func (e *UnavailableError) Unwrap() error        { return e.Err }

// Spec is what Arm registers.
type Spec struct {
	// ID is the transaction's ID (the journal's); it names the units.
	ID string
	// Deadline is when the command runs unless Disarm came first. It must
	// be in the future.
	Deadline time.Time
	// Argv is the command the service runs; Argv[0] is an absolute path.
	Argv []string
	// Env is KEY=VALUE pairs for the command (Env()).
	Env []string
}

// Timer is an armed confirm timer.
type Timer struct {
	ID          string
	TimerUnit   string // op-dbus-confirm-ID.timer
	ServiceUnit string // op-dbus-confirm-ID.service
	Deadline    time.Time

	conn *dbus.Conn
}

// Units returns the names of the timer and the service for a transaction.
func Units(id string) (timer, service string) {
	return Prefix + id + ".timer", Prefix + id + ".service"
}

var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("confirm timer: transaction ID %q is not usable in a unit name (want 1-128 of A-Z a-z 0-9 _ -)", id)
	}
	return nil
}

// Bus is the bus of the manager to use: the session bus (the user's
// manager) with --user, else the system bus.
func Bus(user bool) dbusx.Bus {
	if user {
		return dbusx.Session
	}
	return dbusx.System
}

// envPassed are the variables the command needs to reach the same buses and
// runtime directory as the applying process.
var envPassed = []string{"DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS", "XDG_RUNTIME_DIR", "HOME"}

// Env returns those of DBUS_SESSION_BUS_ADDRESS, DBUS_SYSTEM_BUS_ADDRESS,
// XDG_RUNTIME_DIR and HOME that are set in this process, as KEY=VALUE.
func Env() []string {
	var out []string
	for _, k := range envPassed {
		if v, ok := os.LookupEnv(k); ok && v != "" {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// RecoverArgv is the command a confirm timer runs: exe (the op-dbus binary,
// e.g. os.Executable()) recover --if-deadline-passed for the state directory
// (made absolute), with --user and --ovsdb as the transaction had them (an
// empty ovsdb is left out).
func RecoverArgv(exe, stateDir string, user bool, ovsdb string) ([]string, error) {
	if !filepath.IsAbs(exe) {
		return nil, fmt.Errorf("confirm timer: the op-dbus binary %q is not an absolute path", exe)
	}
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, fmt.Errorf("confirm timer: state dir: %w", err)
	}
	argv := []string{exe, "recover", "--if-deadline-passed", "--state-dir", dir}
	if user {
		argv = append(argv, "--user")
	}
	if ovsdb != "" {
		argv = append(argv, "--ovsdb", ovsdb)
	}
	return argv, nil
}

// Available returns nil if a systemd manager answers on conn, an
// *UnavailableError if none does, or another error if the bus cannot be
// asked.
func Available(ctx context.Context, conn *dbus.Conn) error {
	var owned bool
	if err := call(ctx, conn.BusObject(), "org.freedesktop.DBus.NameHasOwner", []any{&owned}, systemdName); err != nil {
		return fmt.Errorf("confirm timer: %w", err)
	}
	if !owned {
		return &UnavailableError{Why: systemdName + " has no owner"}
	}
	var v dbus.Variant
	err := call(ctx, manager(conn), "org.freedesktop.DBus.Properties.Get", []any{&v}, managerIface, "Version")
	if err != nil {
		return classify(err)
	}
	return nil
}

// RetryEvery is how soon the timer's service runs again when the
// transaction's process still holds the lock past the deadline.
var RetryEvery = 3 * time.Second

// D-Bus shapes of StartTransientUnit's arguments.
type (
	restartPrevent struct { // (aiai): exit statuses, signals
		Codes   []int32
		Signals []int32
	}
	property struct {
		Name  string
		Value dbus.Variant
	}
	auxUnit struct {
		Name  string
		Props []property
	}
	execCommand struct { // (sasb)
		Path          string
		Argv          []string
		IgnoreFailure bool
	}
	monotonicTimer struct { // (st)
		Base string
		USec uint64
	}
	calendarTimer struct { // (ss)
		Base string
		Spec string
	}
)

func prop(name string, v any) property { return property{name, dbus.MakeVariant(v)} }

// Arm registers the timer and its service and returns once the manager
// reports the timer active (waiting for its deadline).
func Arm(ctx context.Context, conn *dbus.Conn, s Spec) (*Timer, error) {
	if err := checkID(s.ID); err != nil {
		return nil, err
	}
	if len(s.Argv) == 0 || !filepath.IsAbs(s.Argv[0]) {
		return nil, fmt.Errorf("confirm timer: the command must start with an absolute path, got %q", s.Argv)
	}
	left := time.Until(s.Deadline)
	if left <= 0 {
		return nil, fmt.Errorf("confirm timer: deadline %s already passed", s.Deadline.UTC().Format(time.RFC3339))
	}
	timer, service := Units(s.ID)
	what := fmt.Sprintf("op-dbus: roll back transaction %s unless confirmed by %s", s.ID, s.Deadline.UTC().Format(time.RFC3339))
	usec := uint64(math.Ceil(float64(left) / float64(time.Microsecond)))
	cal := s.Deadline.UTC()
	if t := cal.Truncate(time.Second); !t.Equal(cal) {
		cal = t.Add(time.Second)
	}
	env := s.Env
	if env == nil {
		env = []string{}
	}
	timerProps := []property{
		prop("Description", what),
		prop("TimersMonotonic", []monotonicTimer{{"OnActiveSec", usec}}),
		prop("TimersCalendar", []calendarTimer{{"OnCalendar", cal.Format("2006-01-02 15:04:05") + " UTC"}}),
		prop("AccuracyUSec", uint64(Accuracy/time.Microsecond)),
		prop("RemainAfterElapse", false),
	}
	serviceProps := []property{
		prop("Description", what),
		prop("Type", "oneshot"),
		prop("ExecStart", []execCommand{{s.Argv[0], s.Argv, false}}),
		prop("Environment", env),
		// `recover --if-deadline-passed` exits 75 while the transaction's
		// process still holds the lock past the deadline (rolling back, or
		// hung): run it again until that process has acted or is gone.
		prop("Restart", "on-failure"),
		prop("RestartUSec", uint64(RetryEvery/time.Microsecond)),
		prop("RestartPreventExitStatus", restartPrevent{Codes: []int32{1}, Signals: []int32{}}),
		prop("StartLimitIntervalUSec", uint64(0)),
	}
	var job dbus.ObjectPath
	err := call(ctx, manager(conn), managerIface+".StartTransientUnit", []any{&job},
		timer, "fail", timerProps, []auxUnit{{service, serviceProps}})
	if err != nil {
		return nil, fmt.Errorf("confirm timer: arm %s: %w", timer, classify(err))
	}
	t := &Timer{ID: s.ID, TimerUnit: timer, ServiceUnit: service, Deadline: s.Deadline, conn: conn}
	// The reply comes once the start job is queued; the timer is armed
	// when it is active.
	st, err := waitState(ctx, conn, timer, func(st string) bool { return st == "active" || st == "failed" })
	if err == nil && st != "active" {
		err = fmt.Errorf("the manager reports it %s, not active", st)
	}
	if err != nil {
		// Not armed as far as the caller knows, so not armed at all.
		if derr := Disarm(context.WithoutCancel(ctx), conn, s.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, fmt.Errorf("confirm timer: arm %s: %w", timer, err)
	}
	return t, nil
}

// Disarm cancels the timer t armed.
func (t *Timer) Disarm(ctx context.Context) error {
	return Disarm(ctx, t.conn, t.ID)
}

// Disarm stops the timer and the service of transaction id and clears a
// failed state, on the manager conn reaches; units that do not exist (never
// armed, already elapsed and gone, disarmed before) are fine. It returns
// once the timer is gone or inactive.
func Disarm(ctx context.Context, conn *dbus.Conn, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	timer, service := Units(id)
	for _, u := range []string{timer, service} {
		var job dbus.ObjectPath
		if err := call(ctx, manager(conn), managerIface+".StopUnit", []any{&job}, u, "replace"); err != nil && !noSuchUnit(err) {
			return fmt.Errorf("confirm timer: disarm: stop %s: %w", u, classify(err))
		}
	}
	if _, err := waitState(ctx, conn, timer, func(st string) bool { return st == "" || st == "inactive" || st == "failed" }); err != nil {
		return fmt.Errorf("confirm timer: disarm %s: %w", timer, err)
	}
	for _, u := range []string{timer, service} {
		if err := call(ctx, manager(conn), managerIface+".ResetFailedUnit", nil, u); err != nil && !noSuchUnit(err) {
			return fmt.Errorf("confirm timer: disarm: reset-failed %s: %w", u, classify(err))
		}
	}
	return nil
}

// waitState polls the unit's ActiveState ("" once the unit is not loaded)
// until done accepts it, for at most CallTimeout.
func waitState(ctx context.Context, conn *dbus.Conn, unit string, done func(string) bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		st, err := activeState(ctx, conn, unit)
		if err != nil {
			return "", err
		}
		if done(st) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("still %s after %s: %w", orNotLoaded(st), CallTimeout, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

func orNotLoaded(st string) string {
	if st == "" {
		return "not loaded"
	}
	return st
}

// activeState returns the unit's ActiveState, or "" if it is not loaded.
func activeState(ctx context.Context, conn *dbus.Conn, unit string) (string, error) {
	var path dbus.ObjectPath
	if err := call(ctx, manager(conn), managerIface+".GetUnit", []any{&path}, unit); err != nil {
		if noSuchUnit(err) {
			return "", nil
		}
		return "", classify(err)
	}
	var v dbus.Variant
	if err := call(ctx, conn.Object(systemdName, path), "org.freedesktop.DBus.Properties.Get", []any{&v}, unitIface, "ActiveState"); err != nil {
		if noSuchUnit(err) || dbusx.ErrorName(err) == "org.freedesktop.DBus.Error.UnknownObject" {
			return "", nil // unloaded between the two calls
		}
		return "", classify(err)
	}
	st, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("ActiveState of %s: unexpected %s", unit, v.Signature())
	}
	return st, nil
}

func manager(conn *dbus.Conn) dbus.BusObject { return conn.Object(systemdName, systemdPath) }

// call makes one method call with NoAutoStart, bounded by CallTimeout.
func call(ctx context.Context, obj dbus.BusObject, method string, out []any, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	c := obj.CallWithContext(ctx, method, dbus.FlagNoAutoStart, args...)
	if c.Err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no reply: %w", method, ctx.Err())
		}
		return fmt.Errorf("%s: %w", method, c.Err)
	}
	if len(out) > 0 {
		if err := c.Store(out...); err != nil {
			return fmt.Errorf("%s: unexpected reply: %w", method, err)
		}
	}
	return nil
}

func noSuchUnit(err error) bool {
	return dbusx.ErrorName(err) == "org.freedesktop.systemd1.NoSuchUnit"
}

// classify turns "nobody owns org.freedesktop.systemd1" into an
// *UnavailableError and adds a hint to a denied call.
func classify(err error) error {
	switch dbusx.ErrorName(err) {
	case "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner":
		return &UnavailableError{Why: systemdName + " is not on the bus", Err: err}
	}
	if dbusx.IsAccessDenied(err) {
		return fmt.Errorf("%w (a transient unit of the system manager needs root, or org.freedesktop.systemd1.manage-units)", err)
	}
	return err
}
