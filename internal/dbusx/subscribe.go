package dbusx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// Match is one signal match rule. Subscribe sends it to the bus (AddMatch)
// and also applies it to each signal locally: on a shared connection every
// signal channel sees every signal the connection receives, whoever asked
// for it (a flood of hostnamed's PropertiesChanged reaches systemd's job
// waiter too).
type Match struct {
	// Sender is a bus name. Locally it is checked only when it is a unique
	// name or the bus itself: signals carry the sender's unique name, and a
	// well-known name's owner may change.
	Sender string
	// Path is an exact object path; PathNamespace a path and everything
	// below it.
	Path, PathNamespace dbus.ObjectPath
	Interface, Member   string
	// Arg0 is the exact value of a string first argument, if set.
	Arg0 string
}

// Options are the godbus match options of m, for AddMatchSignal and
// RemoveMatchSignal.
func (m Match) Options() []dbus.MatchOption {
	var o []dbus.MatchOption
	if m.Sender != "" {
		o = append(o, dbus.WithMatchSender(m.Sender))
	}
	if m.Path != "" {
		o = append(o, dbus.WithMatchObjectPath(m.Path))
	}
	if m.PathNamespace != "" {
		o = append(o, dbus.WithMatchPathNamespace(m.PathNamespace))
	}
	if m.Interface != "" {
		o = append(o, dbus.WithMatchInterface(m.Interface))
	}
	if m.Member != "" {
		o = append(o, dbus.WithMatchMember(m.Member))
	}
	if m.Arg0 != "" {
		o = append(o, dbus.WithMatchArg(0, m.Arg0))
	}
	return o
}

// Matches reports whether s passes m (see Sender for the one part that is
// only checked where it can be).
func (m Match) Matches(s *dbus.Signal) bool {
	if s == nil {
		return false
	}
	if m.Sender != "" && (strings.HasPrefix(m.Sender, ":") || m.Sender == "org.freedesktop.DBus") && s.Sender != m.Sender {
		return false
	}
	if m.Path != "" && s.Path != m.Path {
		return false
	}
	if ns := m.PathNamespace; ns != "" && s.Path != ns && ns != "/" && !strings.HasPrefix(string(s.Path), string(ns)+"/") {
		return false
	}
	if m.Interface != "" || m.Member != "" {
		i := strings.LastIndexByte(s.Name, '.')
		if i < 0 {
			return false
		}
		if m.Interface != "" && s.Name[:i] != m.Interface {
			return false
		}
		if m.Member != "" && s.Name[i+1:] != m.Member {
			return false
		}
	}
	if m.Arg0 != "" {
		if len(s.Body) == 0 {
			return false
		}
		if a, ok := s.Body[0].(string); !ok || a != m.Arg0 {
			return false
		}
	}
	return true
}

// SignalBuffer is the capacity of a Subscription's channel from godbus. The
// handler empties it faster than a bus fills it; were it ever full, godbus
// parks the signal in a goroutine of its own rather than block the
// connection or the other subscribers.
const SignalBuffer = 4096

// Subscription is one consumer's signal channel and match rules on a
// (shared) connection. Close removes both and leaves the connection open.
type Subscription struct {
	conn    *dbus.Conn
	matches []Match
	ch      chan *dbus.Signal

	stop      chan struct{}
	done      chan struct{} // closed when the handler goroutine has returned
	lost      bool          // set before done closes: the connection closed
	closeOnce sync.Once
}

// Subscribe adds the match rules to conn and calls handle, from one
// goroutine, for every signal that passes one of them, until Close or the
// connection's loss (Done). handle must not block: it runs for every
// matching signal of the connection, in order, and Close waits for it.
// With no matches every signal the connection receives is handed over (the
// caller adds its rules itself).
func Subscribe(ctx context.Context, conn *dbus.Conn, handle func(*dbus.Signal), matches ...Match) (*Subscription, error) {
	s := &Subscription{conn: conn, ch: make(chan *dbus.Signal, SignalBuffer),
		stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	for i, m := range matches {
		if err := conn.AddMatchSignalContext(ctx, m.Options()...); err != nil {
			s.matches = matches[:i]
			s.removeMatches()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("AddMatch %s: %w", m, err)
		}
	}
	s.matches = matches
	conn.Signal(s.ch)
	go s.run(handle)
	return s, nil
}

func (s *Subscription) run(handle func(*dbus.Signal)) {
	defer close(s.done)
	for {
		select {
		case <-s.stop:
			return
		case sig, ok := <-s.ch:
			if !ok { // the connection closed (godbus closes our channel)
				s.lost = true
				return
			}
			if s.wants(sig) {
				handle(sig)
			}
		}
	}
}

func (s *Subscription) wants(sig *dbus.Signal) bool {
	if sig == nil {
		return false
	}
	if len(s.matches) == 0 {
		return true
	}
	for _, m := range s.matches {
		if m.Matches(sig) {
			return true
		}
	}
	return false
}

// Done is closed when the subscription ends: after Close, or when the
// connection is lost (Lost then reports true).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Lost reports, once Done is closed, whether the connection was lost.
func (s *Subscription) Lost() bool {
	select {
	case <-s.done:
		return s.lost
	default:
		return false
	}
}

// Close stops the handler, removes the signal channel and the match rules
// (bounded by DefaultTimeout; nothing to remove on a lost connection) and
// leaves the connection open. It must not be called from the handler.
func (s *Subscription) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		s.conn.RemoveSignal(s.ch)
		<-s.done
		err = s.removeMatches()
	})
	return err
}

func (s *Subscription) removeMatches() error {
	if !s.conn.Connected() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, m := range s.matches {
		if err := s.conn.RemoveMatchSignalContext(ctx, m.Options()...); err != nil && s.conn.Connected() {
			errs = append(errs, fmt.Errorf("RemoveMatch %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// String is the rule as the bus sees it (without type='signal').
func (m Match) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"='"+v+"'")
		}
	}
	add("sender", m.Sender)
	add("path", string(m.Path))
	add("path_namespace", string(m.PathNamespace))
	add("interface", m.Interface)
	add("member", m.Member)
	add("arg0", m.Arg0)
	return strings.Join(parts, ",")
}
