// Package dbusservice exports op-dbus itself on D-Bus as org.opdbus1: the
// daemon's Query, Plan and Apply (with the same plan-hash rule as the HTTP
// API and MCP), its mode and drift count as properties, and signals when
// the live state changes, drifts or is applied.
//
// Who may call what is the bus policy's business (dist/org.opdbus1.conf:
// anyone may Query and Plan, only root may Apply); Apply also checks the
// caller's uid itself, so a relaxed or missing policy (a session bus) does
// not open it to other users: root and the daemon's own user only.
package dbusservice

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/errkind"
)

// Names on the bus.
const (
	BusName   = "org.opdbus1"
	Path      = dbus.ObjectPath("/org/opdbus1")
	Interface = "org.opdbus1.Manager"

	// Error names: every other error's name comes from its kind
	// (errkind.DBusName); these are the ones this package raises itself.
	ErrInvalidArgs = "org.freedesktop.DBus.Error.InvalidArgs"
	ErrAccess      = "org.freedesktop.DBus.Error.AccessDenied"
	ErrFailed      = "org.opdbus1.Error.Failed"
)

// CallTimeout bounds each method's work.
var CallTimeout = 5 * time.Minute

// Options configure a Server.
type Options struct {
	// Mode is the daemon's mode, shown as the Mode property.
	Mode string
	// ConfirmWithin, when set, makes Apply wait for `op-dbus commit`.
	ConfirmWithin time.Duration
	// Log receives one-line messages.
	Log func(format string, args ...any)
}

// Server is org.opdbus1 on one connection.
type Server struct {
	conn  *dbus.Conn
	svc   *control.Service
	opts  Options
	props *prop.Properties
	uid   uint32

	mu    sync.Mutex
	drift map[string]int
	total int // DriftCount as last set
}

const introspection = `
<interface name="org.opdbus1.Manager">
  <method name="Query">
    <arg name="plugins" type="as" direction="in"/>
    <arg name="state_json" type="s" direction="out"/>
  </method>
  <method name="Plan">
    <arg name="state_json" type="s" direction="in"/>
    <arg name="plan_hash" type="s" direction="out"/>
    <arg name="plan_json" type="s" direction="out"/>
  </method>
  <method name="Apply">
    <arg name="plan_hash" type="s" direction="in"/>
    <arg name="result_json" type="s" direction="out"/>
  </method>
  <property name="Mode" type="s" access="read"/>
  <property name="DriftCount" type="u" access="read"/>
  <signal name="StateChanged"><arg name="plugin" type="s"/></signal>
  <signal name="DriftDetected"><arg name="plugin" type="s"/><arg name="items" type="u"/></signal>
  <signal name="Applied"><arg name="plan_hash" type="s"/><arg name="success" type="b"/><arg name="source" type="s"/></signal>
</interface>`

// Start exports the object on conn and requests BusName. It fails if the
// name is taken or the bus policy forbids owning it, and then leaves conn
// as it found it. conn may be the process's shared connection: Close
// releases the name and unexports the object, and never closes conn.
func Start(conn *dbus.Conn, svc *control.Service, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	s := &Server{conn: conn, svc: svc, opts: opts, uid: uint32(os.Geteuid()), drift: map[string]int{}}
	if err := s.export(); err != nil {
		s.unexport()
		return nil, err
	}
	reply, err := conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		s.unexport()
		return nil, fmt.Errorf("request bus name %s: %w (is the bus policy dist/org.opdbus1.conf installed in /usr/share/dbus-1/system.d?)", BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		s.unexport()
		return nil, fmt.Errorf("bus name %s is owned by another process (is another op-dbus serve running?)", BusName)
	}
	return s, nil
}

func (s *Server) export() error {
	if err := s.conn.ExportMethodTable(map[string]any{
		"Query": s.query,
		"Plan":  s.plan,
		"Apply": s.apply,
	}, Path, Interface); err != nil {
		return fmt.Errorf("export %s: %w", Path, err)
	}
	props, err := prop.Export(s.conn, Path, prop.Map{Interface: {
		"Mode":       {Value: s.opts.Mode, Emit: prop.EmitConst},
		"DriftCount": {Value: uint32(0), Emit: prop.EmitTrue},
	}})
	if err != nil {
		return fmt.Errorf("export properties: %w", err)
	}
	s.props = props
	node := &introspect.Node{Name: string(Path), Interfaces: []introspect.Interface{
		introspect.IntrospectData, prop.IntrospectData, mustInterface(introspection),
	}}
	if err := s.conn.Export(introspect.NewIntrospectable(node), Path, "org.freedesktop.DBus.Introspectable"); err != nil {
		return fmt.Errorf("export %s: %w", Path, err)
	}
	return nil
}

// unexport removes the object's interfaces from the connection.
func (s *Server) unexport() {
	_ = s.conn.ExportMethodTable(nil, Path, Interface)
	_ = s.conn.Export(nil, Path, "org.freedesktop.DBus.Properties")
	_ = s.conn.Export(nil, Path, "org.freedesktop.DBus.Introspectable")
}

func mustInterface(x string) introspect.Interface {
	var n introspect.Node
	if err := xmlUnmarshal("<node>"+x+"</node>", &n); err != nil || len(n.Interfaces) != 1 {
		panic(fmt.Sprintf("dbusservice: bad introspection data: %v", err))
	}
	return n.Interfaces[0]
}

// Close releases the name and unexports the object; the connection stays
// open (it may be shared). On a lost connection there is nothing to
// release.
func (s *Server) Close() error {
	var err error
	if s.conn.Connected() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var reply uint32
		err = s.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.ReleaseName", 0, BusName).Store(&reply)
		cancel()
		if err != nil {
			err = fmt.Errorf("release bus name %s: %w", BusName, err)
		}
	}
	s.unexport()
	return err
}

func dbusErr(name string, err error) *dbus.Error {
	return dbus.NewError(name, []any{err.Error()})
}

func (s *Server) query(plugins []string) (string, *dbus.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	res, err := s.svc.Query(ctx, plugins)
	if err != nil {
		return "", dbusErr(errkind.DBusName(err), err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return "", dbusErr(ErrFailed, err)
	}
	return string(b), nil
}

func (s *Server) plan(doc string) (string, string, *dbus.Error) {
	d, err := s.svc.Decode([]byte(doc))
	if err != nil {
		return "", "", dbusErr(ErrInvalidArgs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	p, err := s.svc.Plan(ctx, d)
	if err != nil {
		return "", "", dbusErr(errkind.DBusName(err), err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", "", dbusErr(ErrFailed, err)
	}
	return p.PlanHash, string(b), nil
}

func (s *Server) apply(sender dbus.Sender, hash string) (string, *dbus.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	var uid uint32
	if err := s.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid); err != nil {
		return "", dbusErr(ErrAccess, fmt.Errorf("cannot tell who called Apply (%s): %w", sender, err))
	}
	client := fmt.Sprintf("dbus:%s uid=%d", sender, uid)
	if uid != 0 && uid != s.uid {
		err := fmt.Errorf("Apply is allowed to root (and uid %d, which runs op-dbus) only; caller %s has uid %d", s.uid, sender, uid)
		return "", dbusErr(ErrAccess, err)
	}
	res, err := s.svc.Apply(ctx, hash, client, s.opts.ConfirmWithin)
	if err != nil {
		return "", dbusErr(errkind.DBusName(err), err)
	}
	s.Applied(hash, res.Success, "dbus")
	b, err := json.Marshal(res)
	if err != nil {
		return "", dbusErr(ErrFailed, err)
	}
	return string(b), nil
}

func (s *Server) emit(member string, args ...any) {
	if err := s.conn.Emit(Path, Interface+"."+member, args...); err != nil {
		s.opts.Log("D-Bus signal %s: %v", member, err)
	}
}

// StateChanged signals that a plugin's live state changed (an event from
// its source).
func (s *Server) StateChanged(plugin string) { s.emit("StateChanged", plugin) }

// SetDrift records how many items of plugin are out of line; a non-zero
// count that differs from the last one is signalled as DriftDetected, and
// DriftCount (the sum over plugins) is updated with PropertiesChanged when
// it changes.
func (s *Server) SetDrift(plugin string, n int) {
	s.mu.Lock()
	prev, seen := s.drift[plugin]
	s.drift[plugin] = n
	total := 0
	for _, v := range s.drift {
		total += v
	}
	changed := total != s.total
	s.total = total
	s.mu.Unlock()
	if n > 0 && (!seen || prev != n) {
		s.emit("DriftDetected", plugin, uint32(n))
	}
	// The daemon reports after every check; godbus's prop emits
	// PropertiesChanged on every Set, so set only what changed.
	if changed {
		s.props.SetMust(Interface, "DriftCount", uint32(total))
	}
}

// Applied signals a finished apply or correction.
func (s *Server) Applied(planHash string, success bool, source string) {
	s.emit("Applied", planHash, success, source)
}
