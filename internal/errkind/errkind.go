// Package errkind gives op-dbus's errors a kind that front ends switch on,
// never on the message text, and maps each kind once to what each front
// end speaks: a CLI exit code, an HTTP status and code, a D-Bus error name.
// MCP reports tool failures inside the tool result (as the MCP spec asks),
// named by Code.
package errkind

import (
	"errors"
	"net/http"
)

// Kind says what sort of failure an error is.
type Kind int

// The kinds. Internal is every error that carries no kind.
const (
	Internal Kind = iota
	// Invalid: the request or document is malformed or breaks a rule.
	Invalid
	// UnknownPlugin: a plugin name that no plugin registered.
	UnknownPlugin
	// Unavailable: the plugin's service is absent here (not an error for a
	// whole-host query, an error when the plugin was asked for by name).
	Unavailable
	// Locked: another transaction holds the state directory.
	Locked
	// UnknownPlan: a plan hash this server never handed out.
	UnknownPlan
	// StalePlan: the live state changed since the plan was made.
	StalePlan
	// Damaged: the audit log, journal or another record is damaged and
	// nothing is changed until a person looks.
	Damaged
	// Unsupported: the host lacks what the request needs (no systemd to
	// hold a confirm deadline, for instance).
	Unsupported
	// NotFound: the thing asked for does not exist (audit entry, snapshot).
	NotFound
	// Denied: the caller may not do this.
	Denied
	// Failed: the operation ran and failed (apply failed and rolled back).
	Failed
)

var names = map[Kind]string{
	Internal: "internal", Invalid: "invalid", UnknownPlugin: "unknown_plugin", Unavailable: "unavailable",
	Locked: "locked", UnknownPlan: "unknown_plan", StalePlan: "stale_plan", Damaged: "damaged",
	Unsupported: "unsupported", NotFound: "not_found", Denied: "denied", Failed: "failed",
}

// String is the kind's snake_case name, also the HTTP error body's code.
func (k Kind) String() string { return names[k] }

// Error is an error of a kind.
type Error struct {
	Kind Kind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New gives err a kind (nil stays nil).
func New(k Kind, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Err: err}
}

// Errorf is New(k, errors.New(msg)).
func Errorf(k Kind, msg string) error { return &Error{Kind: k, Err: errors.New(msg)} }

// Of returns the kind of the outermost error in err's chain that has one;
// Internal when none has.
func Of(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && Of(err) == k }

// mapping is the one table of what each kind means to each front end.
type mapping struct {
	exit   int
	status int
	dbus   string
}

var table = map[Kind]mapping{
	Internal:      {1, http.StatusInternalServerError, "org.opdbus1.Error.Failed"},
	Invalid:       {1, http.StatusBadRequest, "org.freedesktop.DBus.Error.InvalidArgs"},
	UnknownPlugin: {1, http.StatusNotFound, "org.opdbus1.Error.UnknownPlugin"},
	Unavailable:   {1, http.StatusServiceUnavailable, "org.opdbus1.Error.Unavailable"},
	Locked:        {1, http.StatusConflict, "org.opdbus1.Error.Locked"},
	UnknownPlan:   {1, http.StatusConflict, "org.opdbus1.Error.UnknownPlan"},
	StalePlan:     {1, http.StatusConflict, "org.opdbus1.Error.StalePlan"},
	Damaged:       {1, http.StatusInternalServerError, "org.opdbus1.Error.Damaged"},
	Unsupported:   {1, http.StatusNotImplemented, "org.opdbus1.Error.Unsupported"},
	NotFound:      {1, http.StatusNotFound, "org.opdbus1.Error.NotFound"},
	Denied:        {1, http.StatusForbidden, "org.freedesktop.DBus.Error.AccessDenied"},
	Failed:        {1, http.StatusInternalServerError, "org.opdbus1.Error.Failed"},
}

// ExitCode is the CLI's exit code for err (0 for nil). Every error is 1:
// 2 is reserved for "changes present" (Terraform's -detailed-exitcode).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	return table[Of(err)].exit
}

// HTTPStatus is the API's status for err.
func HTTPStatus(err error) int { return table[Of(err)].status }

// Code is the machine-readable code of err: the API's error code, and the
// code MCP tool errors name.
func Code(err error) string { return Of(err).String() }

// DBusName is the D-Bus error name for err.
func DBusName(err error) string { return table[Of(err)].dbus }
