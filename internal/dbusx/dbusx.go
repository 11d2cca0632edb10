// Package dbusx opens D-Bus connections (system, session, or an explicit
// address) with timeouts, and wraps the calls every plugin makes so none can
// hang forever.
package dbusx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 25 * time.Second

// Bus names which bus to connect to.
type Bus string

const (
	System  Bus = "system"
	Session Bus = "session"
)

// Address resolves a Bus to a D-Bus address, honoring
// DBUS_SYSTEM_BUS_ADDRESS and DBUS_SESSION_BUS_ADDRESS.
func (b Bus) Address() (string, error) {
	switch b {
	case System:
		if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		return "unix:path=/run/dbus/system_bus_socket", nil
	case Session:
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return "unix:path=" + d + "/bus", nil
		}
		return "", errors.New("no session bus: DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are unset")
	}
	if strings.Contains(string(b), ":") {
		return string(b), nil
	}
	return "", fmt.Errorf("bus %q: expected system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket", string(b))
}

func (b Bus) String() string {
	switch b {
	case System:
		return "system bus"
	case Session:
		return "session bus"
	}
	return "bus " + string(b)
}

// Open connects, authenticates and says Hello within ctx (or DefaultTimeout).
// The caller owns the connection and must Close it.
func Open(ctx context.Context, b Bus) (*dbus.Conn, error) {
	addr, err := b.Address()
	if err != nil {
		return nil, err
	}
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	// dbus.Connect authenticates and says Hello synchronously and has no
	// deadline of its own (its WithContext option sets the connection's
	// lifetime, not the handshake's), so bound the handshake here.
	type result struct {
		conn *dbus.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := dbus.Connect(addr, dbus.WithAuth(dbus.AuthExternal(fmt.Sprint(os.Getuid()))))
		ch <- result{c, err}
	}()
	var conn *dbus.Conn
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("connect to %s (%s): %w%s", b, addr, r.err, connectHint(b, r.err))
		}
		conn = r.conn
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("connect to %s (%s): no answer: %w", b, addr, ctx.Err())
	}
	return conn, nil
}

// WithTimeout returns ctx unchanged if it has a deadline, else one bounded
// by DefaultTimeout.
func WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}

// Call invokes a method with a bounded context and stores the reply in out.
func Call(ctx context.Context, obj dbus.BusObject, method string, out []any, args ...any) error {
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	c := obj.CallWithContext(ctx, method, 0, args...)
	if c.Err != nil {
		return callErr(ctx, method, c.Err)
	}
	if len(out) > 0 {
		if err := c.Store(out...); err != nil {
			return fmt.Errorf("%s: unexpected reply: %w", short(method), err)
		}
	}
	return nil
}

func callErr(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: no reply: %w", short(method), ctx.Err())
	}
	return fmt.Errorf("%s: %w", short(method), err)
}

// short drops the interface from "org.x.Iface.Method" for messages.
func short(method string) string {
	if i := strings.LastIndexByte(method, '.'); i >= 0 {
		return method[i+1:]
	}
	return method
}

// Get reads one property.
func Get(ctx context.Context, obj dbus.BusObject, iface, prop string) (dbus.Variant, error) {
	var v dbus.Variant
	if err := Call(ctx, obj, "org.freedesktop.DBus.Properties.Get", []any{&v}, iface, prop); err != nil {
		return dbus.Variant{}, fmt.Errorf("get %s.%s: %w", iface, prop, err)
	}
	return v, nil
}

// HasName reports whether a name is owned now or can be activated.
func HasName(ctx context.Context, conn *dbus.Conn, name string) (bool, error) {
	bus := conn.BusObject()
	var owned bool
	if err := Call(ctx, bus, "org.freedesktop.DBus.NameHasOwner", []any{&owned}, name); err != nil {
		return false, err
	}
	if owned {
		return true, nil
	}
	var act []string
	if err := Call(ctx, bus, "org.freedesktop.DBus.ListActivatableNames", []any{&act}); err != nil {
		return false, err
	}
	for _, a := range act {
		if a == name {
			return true, nil
		}
	}
	return false, nil
}

// IsAccessDenied reports whether err is a D-Bus access-denied error (polkit
// or bus policy), so callers can say what permission is missing.
func IsAccessDenied(err error) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == "org.freedesktop.DBus.Error.AccessDenied" ||
			de.Name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
	}
	var dp *dbus.Error
	if errors.As(err, &dp) {
		return dp.Name == "org.freedesktop.DBus.Error.AccessDenied" ||
			dp.Name == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
	}
	return false
}

// ErrorName returns the D-Bus error name of err, or "".
func ErrorName(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dp *dbus.Error
	if errors.As(err, &dp) {
		return dp.Name
	}
	return ""
}

func connectHint(b Bus, err error) string {
	if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
		return ""
	}
	switch b {
	case System:
		return " (is dbus-daemon running? set DBUS_SYSTEM_BUS_ADDRESS to use another bus)"
	case Session:
		return " (is a session bus running? set DBUS_SESSION_BUS_ADDRESS)"
	}
	return " (nothing listens at that address)"
}
