// Package timedate manages the time zone, NTP and RTC mode through
// org.freedesktop.timedate1. See README.md.
package timedate

import (
	"fmt"
	"strings"

	"github.com/op-dbus/op-dbus/internal/dbusprops"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the timedate part of a state document.
type State struct {
	Timezone *string `json:"timezone,omitempty" jsonschema:"description=IANA time zone such as Europe/Berlin or UTC"`
	NTP      *bool   `json:"ntp,omitempty" jsonschema:"description=network time synchronization on (needs an NTP service such as systemd-timesyncd)"`
	LocalRTC *bool   `json:"local_rtc,omitempty" jsonschema:"description=the hardware clock keeps local time instead of UTC"`
}

// Spec describes timedate1 for dbusprops.
var Spec = dbusprops.Spec{
	Plugin:    "timedate",
	Service:   "org.freedesktop.timedate1",
	Path:      "/org/freedesktop/timedate1",
	Interface: "org.freedesktop.timedate1",
	Hint:      "install systemd; systemd-timedated is activated on demand",
	Props:     map[string]string{"timezone": "Timezone", "ntp": "NTP", "local_rtc": "LocalRTC"},
	Setters: []dbusprops.Setter{
		{Item: "timezone", Fields: []string{"timezone"}, Method: "SetTimezone", Verb: "set time zone",
			Args: func(v map[string]any) []any { return []any{dbusprops.String(v["timezone"]), false} }},
		{Item: "ntp", Fields: []string{"ntp"}, Method: "SetNTP", Verb: "set NTP",
			Args: func(v map[string]any) []any { return []any{dbusprops.Bool(v["ntp"]), false} }},
		// fix_system=false: keep the system clock, rewrite the RTC from it.
		{Item: "local_rtc", Fields: []string{"local_rtc"}, Method: "SetLocalRTC", Verb: "set RTC in local time",
			Args: func(v map[string]any) []any { return []any{dbusprops.Bool(v["local_rtc"]), false, false} }},
	},
	OmitEmpty: []string{"timezone"},
	// timedated answers GetAll, and Get of NTP, with an error when it
	// cannot ask systemd about its NTP unit; the query then leaves ntp out.
	Optional: []string{"ntp"},
	NewState: func() any { return &State{} },
	Validate: validate,
}

func init() {
	plugin.Register("timedate", func(plugin.Options) plugin.Plugin { return dbusprops.New(Spec) })
}

// ValidTimezone checks the shape of an IANA name; timedated checks that the
// zone exists on the host when it is set.
func ValidTimezone(tz string) error {
	if tz == "" {
		return fmt.Errorf("empty time zone (use \"UTC\")")
	}
	if strings.HasPrefix(tz, "/") || strings.Contains(tz, "..") || strings.HasSuffix(tz, "/") {
		return fmt.Errorf("not a time zone name; give an IANA name such as Europe/Berlin")
	}
	for _, r := range tz {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_-+", r)) {
			return fmt.Errorf("character %q is not allowed in a time zone name", r)
		}
	}
	return nil
}

func validate(st any) state.Problems {
	s := st.(*State)
	if s.Timezone != nil {
		if err := ValidTimezone(*s.Timezone); err != nil {
			return state.Problems{{Path: "timezone", Msg: fmt.Sprintf("%q: %v", *s.Timezone, err)}}
		}
	}
	return nil
}
