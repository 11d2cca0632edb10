package dbusservice

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// Plan's state_json is decoded by the state parser, which uses the same
// strict decoder as the HTTP API and MCP: a duplicate key at any depth is
// InvalidArgs naming it.
func TestTestbedPlanDuplicateKeys(t *testing.T) {
	e := start(t, testbed.NewBus(t))
	conn, err := dbus.Connect(e.bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object(BusName, Path)
	for _, c := range []struct{ doc, want string }{
		{`{"version":1,"version":1,"plugins":{}}`, "version: duplicate key"},
		{`{"version":1,"plugins":{"hostname":{"location":"a","location":"b"}}}`, "plugins.hostname.location: duplicate key"},
		{`{"version":1,"plugins":{"hostname":{"location":"a","locati\u006fn":"b"}}}`, "plugins.hostname.location: duplicate key"},
		{"version: 1\nplugins:\n  hostname:\n    location: a\n    location: b\n", "plugins.hostname.location: line 5: duplicate key"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var hash, plan string
		err := obj.CallWithContext(ctx, Interface+".Plan", 0, c.doc).Store(&hash, &plan)
		cancel()
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != ErrInvalidArgs || len(de.Body) != 1 || !strings.Contains(de.Body[0].(string), c.want) {
			t.Errorf("Plan(%q): %v (%#v), want %s containing %q", c.doc, err, de, ErrInvalidArgs, c.want)
		}
	}
}
