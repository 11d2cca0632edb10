package dbusx

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNeeded(t *testing.T) {
	getAll := errors.New("GetAll: No route to host")
	pe := &PropertyErrors{Interface: "org.freedesktop.timedate1", GetAll: getAll, Failed: map[string]error{
		"NTP":    errors.New("Get: No route to host"),
		"CanNTP": errors.New("Get: No route to host"),
	}}
	if err := Needed(pe, "Timezone", "LocalRTC"); err != nil {
		t.Errorf("needing readable properties: %v", err)
	}
	if err := Needed(pe); err != nil {
		t.Errorf("needing nothing: %v", err)
	}
	err := Needed(pe, "Timezone", "NTP")
	var need *PropertyErrors
	if !errors.As(err, &need) || !slices.Equal(need.Names(), []string{"NTP"}) {
		t.Fatalf("needing NTP: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "cannot read property NTP (Get: No route to host)") || strings.Contains(msg, "CanNTP") || !strings.Contains(msg, "org.freedesktop.timedate1") {
		t.Errorf("message %q", msg)
	}
	if !errors.Is(err, getAll) {
		t.Errorf("the GetAll error is not wrapped: %v", err)
	}
	other := errors.New("GetAll: no reply")
	if err := Needed(other, "NTP"); err != other {
		t.Errorf("another error changed: %v", err)
	}
	if err := Needed(nil, "NTP"); err != nil {
		t.Errorf("nil became %v", err)
	}
	if msg := pe.Error(); !strings.Contains(msg, "cannot read properties CanNTP (Get: No route to host), NTP (Get: No route to host), and GetAll: No route to host") {
		t.Errorf("message %q", msg)
	}
}
