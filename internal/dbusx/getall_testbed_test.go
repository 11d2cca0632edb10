package dbusx_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5/introspect"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

const (
	timedate     = "org.freedesktop.timedate1"
	timedatePath = "/org/freedesktop/timedate1"
)

// TestTestbedGetAllFallsBackToGet: the real timedated, given an NTP unit
// it cannot ask systemd about, answers GetAll with an error. GetAll then
// reads each property with Get; busctl get-property on the same bus is the
// oracle for which properties can be read and what they hold.
func TestTestbedGetAllFallsBackToGet(t *testing.T) {
	b := testbed.NewIdentity(t, testbed.WithNTPUnits("systemd-timesyncd.service"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if out, err := b.Busctl(ctx, "call", timedate, timedatePath, "org.freedesktop.DBus.Properties", "GetAll", "s", timedate); err == nil {
		t.Fatalf("busctl: GetAll on timedate1 succeeds, the bed should make it fail: %s", out)
	}

	conn, err := dbusx.Open(ctx, dbusx.Bus(b.BusAddress))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, getErr := dbusx.GetAll(ctx, conn.Object(timedate, timedatePath), timedate)
	var pe *dbusx.PropertyErrors
	if !errors.As(getErr, &pe) {
		t.Fatalf("GetAll: want *PropertyErrors, got %v", getErr)
	}
	if pe.Interface != timedate || pe.GetAll == nil {
		t.Errorf("PropertyErrors %+v", pe)
	}
	t.Logf("GetAll: %v", getErr)

	xmlOut, err := b.Busctl(ctx, "introspect", "--xml-interface", timedate, timedatePath)
	if err != nil {
		t.Fatal(err)
	}
	var node introspect.Node
	if err := xml.Unmarshal([]byte(xmlOut), &node); err != nil {
		t.Fatalf("busctl introspect --xml-interface: %v", err)
	}
	var readable, unreadable []string
	for _, ifc := range node.Interfaces {
		if ifc.Name != timedate {
			continue
		}
		for _, p := range ifc.Properties {
			if p.Access != "read" && p.Access != "readwrite" {
				continue
			}
			out, err := b.Busctl(ctx, "--json=short", "get-property", timedate, timedatePath, timedate, p.Name)
			if err != nil {
				unreadable = append(unreadable, p.Name)
				if _, ok := got[p.Name]; ok {
					t.Errorf("%s: busctl cannot read it (%v) but GetAll returned %v", p.Name, err, got[p.Name])
				}
				continue
			}
			readable = append(readable, p.Name)
			v, ok := got[p.Name]
			if !ok {
				t.Errorf("%s: busctl reads %s, GetAll left it out (%v)", p.Name, strings.TrimSpace(out), pe.Failed[p.Name])
				continue
			}
			var want struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal([]byte(out), &want); err != nil {
				t.Fatalf("busctl --json=short get-property %s: %v: %s", p.Name, err, out)
			}
			if v.Signature().String() != want.Type {
				t.Errorf("%s: signature %s, busctl says %s", p.Name, v.Signature(), want.Type)
			}
			// Clocks (TimeUSec, RTCTimeUSec) move between the two reads.
			if want.Type == "s" || want.Type == "b" {
				gotJSON, _ := json.Marshal(v.Value())
				if string(gotJSON) != string(want.Data) {
					t.Errorf("%s = %s, busctl says %s", p.Name, gotJSON, want.Data)
				}
			}
		}
	}
	if !slices.Equal(pe.Names(), slices.Sorted(slices.Values(unreadable))) {
		t.Errorf("failed properties %v, busctl cannot read %v", pe.Names(), unreadable)
	}
	if !slices.Contains(pe.Names(), "NTP") {
		t.Errorf("NTP not among the failed properties %v", pe.Names())
	}
	for _, p := range []string{"Timezone", "LocalRTC"} {
		if !slices.Contains(readable, p) {
			t.Errorf("busctl cannot read %s; the bed should let it", p)
		}
	}
	for _, n := range pe.Names() {
		if !strings.Contains(getErr.Error(), n) {
			t.Errorf("error does not name %s: %v", n, getErr)
		}
	}
}
