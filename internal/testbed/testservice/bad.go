package testservice

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Objects of the misbehaving service.
const (
	BadRoot       = dbus.ObjectPath("/org/opdbus/TestBad1")
	HangPath      = BadRoot + "/hang"
	HugePath      = BadRoot + "/huge"
	MalformedPath = BadRoot + "/malformed"
	DeniedPath    = BadRoot + "/denied"

	// HugeSize is the size in bytes of HugePath's introspection document.
	// With the message header it stays below the protocol's 128 MiB
	// message limit.
	HugeSize = 100_000_000

	// ErrorClosed is what the held calls of HangPath finally get when
	// ServeBad's close function runs.
	ErrorClosed = "org.opdbus.TestBad1.Error.Closed"
)

// MalformedXML is what MalformedPath's Introspect returns: not well-formed
// (the <method> element is never closed).
const MalformedXML = doctype + `<node>
 <interface name="org.opdbus.TestBad1.Malformed">
  <method name="Broken">
   <arg name="x" type="s" direction="in"/>
 </interface>
</node>
`

// ServeBad exports the misbehaving objects on conn and requests BadName
// (DBUS_NAME_FLAG_DO_NOT_QUEUE; error if not primary owner):
//
//   - HangPath: Introspect and every Properties method (Get, GetAll, Set)
//     never reply: each call is held in its own goroutine (godbus runs every
//     call in one), so other calls on conn, to this object too (Peer.Ping),
//     are answered meanwhile. The close function releases the held calls,
//     which then get ErrorClosed.
//   - HugePath: Introspect returns a valid document of HugeSize bytes: an
//     interface org.opdbus.TestBad1.Huge with 200000 methods (~12 MB, none
//     of them callable) and an annotation whose value is the other ~88 MB
//     (lines of 79 "x"), then Introspectable and Peer. It is built on each
//     call.
//   - MalformedPath: Introspect returns MalformedXML.
//   - DeniedPath: Introspect fails with org.freedesktop.DBus.Error.AccessDenied.
//   - BadRoot: Introspect lists those four children (and Introspectable and
//     Peer).
//
// The returned function releases the name and unexports everything.
func ServeBad(conn *dbus.Conn) (func() error, error) {
	if err := claim(conn, BadRoot); err != nil {
		return nil, err
	}
	ex := &exports{conn: conn}
	stop := make(chan struct{})
	std := []introspect.Interface{introspect.IntrospectData, introspect.PeerData}
	err := errors.Join(
		ex.export(introspect.Introspectable(nodeXML(std, []string{"hang", "huge", "malformed", "denied"})), BadRoot, ifaceIntrospect),
		ex.export(hang{stop}, HangPath, ifaceIntrospect),
		ex.export(hangProps{stop}, HangPath, ifaceProperties),
		ex.export(huge{}, HugePath, ifaceIntrospect),
		ex.export(introspect.Introspectable(MalformedXML), MalformedPath, ifaceIntrospect),
		ex.export(denied{}, DeniedPath, ifaceIntrospect),
	)
	if err == nil {
		err = requestName(conn, BadName)
	}
	if err != nil {
		close(stop)
		ex.unexportAll()
		unclaim(conn, BadRoot)
		return nil, err
	}
	var once sync.Once
	var closeErr error
	return func() error {
		once.Do(func() {
			close(stop)
			if conn.Connected() {
				if _, err := conn.ReleaseName(BadName); err != nil && !errors.Is(err, dbus.ErrClosed) {
					closeErr = fmt.Errorf("testservice: release %s: %w", BadName, err)
				}
			}
			ex.unexportAll()
			unclaim(conn, BadRoot)
		})
		return closeErr
	}, nil
}

func errClosed() *dbus.Error {
	return newErr(ErrorClosed, "The test service was closed")
}

type hang struct{ stop <-chan struct{} }

func (h hang) Introspect() (string, *dbus.Error) {
	<-h.stop
	return "", errClosed()
}

type hangProps struct{ stop <-chan struct{} }

func (h hangProps) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	<-h.stop
	return dbus.Variant{}, errClosed()
}

func (h hangProps) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	<-h.stop
	return nil, errClosed()
}

func (h hangProps) Set(iface, name string, v dbus.Variant) *dbus.Error {
	<-h.stop
	return errClosed()
}

type huge struct{}

func (huge) Introspect() (string, *dbus.Error) {
	return hugeXML(), nil
}

// hugeMethods is the number of methods of the huge interface. busctl
// introspect (systemd 252) aborts on an interface with more than ~500000
// members (it sorts them in an alloca'd array), so the rest of HugeSize is
// an annotation value.
const hugeMethods = 200_000

func hugeXML() string {
	const tail = "\"/>\n </interface>\n" + introspectAndPeerXML + "</node>\n"
	var b strings.Builder
	b.Grow(HugeSize + 256)
	b.WriteString(doctype + "<node>\n <interface name=\"org.opdbus.TestBad1.Huge\">\n")
	buf := make([]byte, 0, 128)
	for i := 0; i < hugeMethods; i++ {
		buf = append(buf[:0], `  <method name="Method`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, `"><arg name="value" type="s" direction="in"/></method>`+"\n"...)
		b.Write(buf)
	}
	b.WriteString(`  <annotation name="org.opdbus.TestBad1.Padding" value="`)
	pad := HugeSize - b.Len() - len(tail)
	line := strings.Repeat("x", 79) + "\n"
	for ; pad >= len(line); pad -= len(line) {
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat("x", pad))
	b.WriteString(tail)
	return b.String()
}

const introspectAndPeerXML = ` <interface name="org.freedesktop.DBus.Introspectable">
  <method name="Introspect">
   <arg name="out" type="s" direction="out"/>
  </method>
 </interface>
 <interface name="org.freedesktop.DBus.Peer">
  <method name="Ping"></method>
  <method name="GetMachineId">
   <arg name="machine_uuid" type="s" direction="out"/>
  </method>
 </interface>
`

type denied struct{}

func (denied) Introspect() (string, *dbus.Error) {
	return "", newErr(errAccessDenied, "Introspection of %s is not allowed", DeniedPath)
}
