package introspect

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed/testservice"
)

// A service that hangs, denies access, or returns malformed or huge XML is
// recorded object by object, and the walk of the good service beside it is
// complete.
func TestTestbedMisbehavingServiceIsRecorded(t *testing.T) {
	if testing.Short() {
		t.Skip("the 100 MB reply takes a while; skipped with -short")
	}
	b, good := serveTest(t, 20)
	badConn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { badConn.Close() })
	stop, err := testservice.ServeBad(badConn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })

	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := &Walker{Conn: conn, Services: []string{testservice.BadName, testservice.Name, "org.opdbus.Missing1", "bad name!"}, CallTimeout: 3 * time.Second}
	res, err := w.Walk(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Service{}
	for _, s := range res.Services {
		byName[s.Name] = s
	}
	if s := byName[testservice.Name]; len(s.Objects) != len(good.Paths()) {
		t.Errorf("the good service lost objects beside the bad one: %d of %d", len(s.Objects), len(good.Paths()))
	}
	if s := byName["org.opdbus.Missing1"]; !strings.Contains(s.Error, "no such name") {
		t.Errorf("missing service: %+v", s)
	}
	if s := byName["bad name!"]; !strings.Contains(s.Error, "not a valid bus name") {
		t.Errorf("invalid name: %+v", s)
	}
	objErr := map[string]string{}
	for _, o := range byName[testservice.BadName].Objects {
		objErr[o.Path] = o.Error
	}
	for path, want := range map[dbus.ObjectPath]string{
		testservice.HangPath:      "no reply within 3s",
		testservice.MalformedPath: "malformed introspection XML",
		testservice.DeniedPath:    "org.freedesktop.DBus.Error.AccessDenied",
	} {
		if !strings.Contains(objErr[string(path)], want) {
			t.Errorf("%s: error %q, want it to contain %q", path, objErr[string(path)], want)
		}
	}
	// The 100 MB document: under load its transfer alone can outlast the
	// call timeout, which is then the (bounded, named) error; either way it
	// is recorded. Its parse is checked directly below.
	if e := objErr[string(testservice.HugePath)]; !strings.Contains(e, "over the 8.0 MiB limit") && !strings.Contains(e, "no reply within 3s") {
		t.Errorf("huge: %q", e)
	}
	if res.Stats.Errors < 6 {
		t.Errorf("stats count %d errors", res.Stats.Errors)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var xmlData string
	if err := conn.Object(testservice.BadName, testservice.HugePath).CallWithContext(ctx, "org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xmlData); err != nil {
		t.Fatalf("fetching the 100 MB document: %v", err)
	}
	if _, err := ParseXML([]byte(xmlData)); err == nil || !strings.Contains(err.Error(), "95.4 MiB, over the 8.0 MiB limit") {
		t.Errorf("100 MB XML: %v", err)
	}
}
