package timedate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/dbusprops"
	"github.com/op-dbus/op-dbus/internal/plugins/timedate"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// TestTestbedQueryWhenGetAllFails: the real timedated, given an NTP unit
// it cannot ask systemd about, answers GetAll (and Get of NTP) with an
// error. The query still reads the time zone and RTC mode, one Get each,
// as busctl get-property reads them on the same bus, and leaves ntp out;
// a Spec that needs NTP fails naming it.
func TestTestbedQueryWhenGetAllFails(t *testing.T) {
	b := testbed.NewIdentity(t, testbed.WithNTPUnits("systemd-timesyncd.service"))
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.BusAddress)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const svc, path = "org.freedesktop.timedate1", "/org/freedesktop/timedate1"
	if out, err := b.Busctl(ctx, "call", svc, path, "org.freedesktop.DBus.Properties", "GetAll", "s", svc); err == nil {
		t.Fatalf("busctl: GetAll on timedate1 succeeds, the bed should make it fail: %s", out)
	}
	if out, err := b.Busctl(ctx, "get-property", svc, path, svc, "NTP"); err == nil {
		t.Fatalf("busctl: NTP reads %s, the bed should make it fail", out)
	}
	oracle := func(prop string) string {
		out, err := b.Busctl(ctx, "get-property", svc, path, svc, prop)
		if err != nil {
			t.Fatalf("busctl get-property %s: %v", prop, err)
		}
		return strings.TrimSpace(out)
	}

	p := dbusprops.New(timedate.Spec)
	defer p.Close()
	st, err := p.Query(ctx)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	s := st.(*timedate.State)
	switch tz := oracle("Timezone"); {
	case tz == `s ""`:
		if s.Timezone != nil {
			t.Errorf("timezone %q, busctl says unset", *s.Timezone)
		}
	case s.Timezone == nil || `s "`+*s.Timezone+`"` != tz:
		t.Errorf("timezone %v, busctl says %s", s.Timezone, tz)
	}
	if rtc := oracle("LocalRTC"); s.LocalRTC == nil || map[bool]string{true: "b true", false: "b false"}[*s.LocalRTC] != rtc {
		t.Errorf("local_rtc %v, busctl says %s", s.LocalRTC, rtc)
	}
	if s.NTP != nil {
		t.Errorf("ntp %v, but NTP cannot be read", *s.NTP)
	}

	needsNTP := timedate.Spec
	needsNTP.Optional = nil
	q := dbusprops.New(needsNTP)
	defer q.Close()
	_, err = q.Query(ctx)
	t.Logf("query needing NTP: %v", err)
	if err == nil || !strings.Contains(err.Error(), "cannot read property NTP") || strings.Contains(err.Error(), "CanNTP") {
		t.Errorf("query needing NTP: want an error naming NTP alone, got %v", err)
	}
}
