// Package hostname manages host identity through org.freedesktop.hostname1.
// See README.md.
package hostname

import (
	"fmt"
	"strings"

	"github.com/op-dbus/op-dbus/internal/dbusprops"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the hostname part of a state document. Every field is optional;
// an absent field is left alone.
type State struct {
	StaticHostname *string `json:"static_hostname,omitempty" jsonschema:"description=the hostname stored in /etc/hostname"`
	// Hostname is the kernel (transient) hostname. hostname1 keeps it equal
	// to the static hostname while one is set, so declaring a different one
	// fails verification.
	Hostname       *string `json:"hostname,omitempty" jsonschema:"description=the transient (kernel) hostname; overridden by a static hostname"`
	PrettyHostname *string `json:"pretty_hostname,omitempty" jsonschema:"description=free-form UTF-8 name for people"`
	Chassis        *string `json:"chassis,omitempty" jsonschema:"enum=,enum=desktop,enum=laptop,enum=convertible,enum=server,enum=tablet,enum=handset,enum=watch,enum=embedded,enum=vm,enum=container"`
	Deployment     *string `json:"deployment,omitempty" jsonschema:"description=development\\, integration\\, staging\\, production..."`
	Location       *string `json:"location,omitempty" jsonschema:"description=where the host is\\, for people"`
}

var chassis = []string{"", "desktop", "laptop", "convertible", "server", "tablet", "handset", "watch", "embedded", "vm", "container"}

func one(field, method, verb string) dbusprops.Setter {
	return dbusprops.Setter{
		Item: field, Fields: []string{field}, Method: method, Verb: verb,
		Args: func(v map[string]any) []any { return []any{dbusprops.String(v[field]), false} },
	}
}

// Spec describes hostname1 for dbusprops.
var Spec = dbusprops.Spec{
	Plugin:    "hostname",
	Service:   "org.freedesktop.hostname1",
	Path:      "/org/freedesktop/hostname1",
	Interface: "org.freedesktop.hostname1",
	Hint:      "install systemd; systemd-hostnamed is activated on demand",
	Props: map[string]string{
		"static_hostname": "StaticHostname",
		"hostname":        "Hostname",
		"pretty_hostname": "PrettyHostname",
		"chassis":         "Chassis",
		"deployment":      "Deployment",
		"location":        "Location",
	},
	// Static before transient: the static name overrides the transient one.
	Setters: []dbusprops.Setter{
		one("static_hostname", "SetStaticHostname", "set static hostname"),
		one("hostname", "SetHostname", "set transient hostname"),
		one("pretty_hostname", "SetPrettyHostname", "set pretty hostname"),
		one("chassis", "SetChassis", "set chassis"),
		one("deployment", "SetDeployment", "set deployment"),
		one("location", "SetLocation", "set location"),
	},
	NewState: func() any { return &State{} },
	Validate: validate,
}

func init() {
	plugin.Register("hostname", func(plugin.Options) plugin.Plugin { return dbusprops.New(Spec) })
}

// ValidHostname follows hostname1's rules for a static hostname: 1-64
// bytes of letters, digits, '-' and '.', no empty label, no leading '-' or
// '.' in a label.
func ValidHostname(h string) error {
	if h == "" {
		return nil // "" clears the static hostname
	}
	if len(h) > 64 {
		return fmt.Errorf("longer than 64 bytes")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" {
			return fmt.Errorf("empty label (two dots, or a leading or trailing dot)")
		}
		if label[0] == '-' {
			return fmt.Errorf("a label may not start with '-'")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q is not allowed (letters, digits, '-' and '.')", r)
			}
		}
	}
	return nil
}

func validate(st any) state.Problems {
	s := st.(*State)
	var ps state.Problems
	for _, f := range []struct {
		name string
		v    *string
	}{{"static_hostname", s.StaticHostname}, {"hostname", s.Hostname}} {
		if f.v != nil {
			if err := ValidHostname(*f.v); err != nil {
				ps = append(ps, state.Problem{Path: f.name, Msg: fmt.Sprintf("invalid hostname %q: %v", *f.v, err)})
			}
		}
	}
	if s.Hostname != nil && *s.Hostname == "" {
		ps = append(ps, state.Problem{Path: "hostname", Msg: "the transient hostname cannot be empty"})
	}
	if s.Chassis != nil {
		ok := false
		for _, c := range chassis {
			ok = ok || c == *s.Chassis
		}
		if !ok {
			ps = append(ps, state.Problem{Path: "chassis", Msg: fmt.Sprintf("unknown chassis %q (one of %s)", *s.Chassis, strings.Join(chassis[1:], ", "))})
		}
	}
	return ps
}
