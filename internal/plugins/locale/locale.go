// Package locale manages the system locale and keyboard layouts through
// org.freedesktop.locale1. See README.md.
package locale

import (
	"fmt"
	"strings"

	"github.com/op-dbus/op-dbus/internal/dbusprops"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the locale part of a state document.
type State struct {
	// A pointer, so that an empty locale is stated ("locale": []) and not
	// confused with "not managed".
	Locale               *[]string `json:"locale,omitempty" jsonschema:"description=locale variables such as LANG=en_US.UTF-8"`
	VConsoleKeymap       *string   `json:"vconsole_keymap,omitempty" jsonschema:"description=console keymap (de-latin1)"`
	VConsoleKeymapToggle *string   `json:"vconsole_keymap_toggle,omitempty"`
	X11Layout            *string   `json:"x11_layout,omitempty" jsonschema:"description=X11/XKB layout (de)"`
	X11Model             *string   `json:"x11_model,omitempty"`
	X11Variant           *string   `json:"x11_variant,omitempty"`
	X11Options           *string   `json:"x11_options,omitempty"`
}

// Spec describes locale1 for dbusprops.
var Spec = dbusprops.Spec{
	Plugin:    "locale",
	Service:   "org.freedesktop.locale1",
	Path:      "/org/freedesktop/locale1",
	Interface: "org.freedesktop.locale1",
	Hint:      "install systemd; systemd-localed is activated on demand",
	Props: map[string]string{
		"locale": "Locale", "vconsole_keymap": "VConsoleKeymap", "vconsole_keymap_toggle": "VConsoleKeymapToggle",
		"x11_layout": "X11Layout", "x11_model": "X11Model", "x11_variant": "X11Variant", "x11_options": "X11Options",
	},
	Setters: []dbusprops.Setter{
		{Item: "locale", Fields: []string{"locale"}, Method: "SetLocale", Verb: "set locale",
			Args: func(v map[string]any) []any { return []any{dbusprops.Strings(v["locale"]), false} },
			// localed ignores an empty list (systemd 252): it cannot clear.
			Refuse: func(v map[string]any) error {
				if len(dbusprops.Strings(v["locale"])) == 0 {
					return fmt.Errorf(`locale: [] cannot be applied: locale1 ignores an empty list and keeps the current locale; name the variables to keep, e.g. ["LANG=C.UTF-8"]`)
				}
				return nil
			}},
		// convert=false: set exactly what the document says; converting would
		// change the other keyboard setting behind the document's back.
		{Item: "vconsole", Fields: []string{"vconsole_keymap", "vconsole_keymap_toggle"}, Method: "SetVConsoleKeyboard", Verb: "set console keyboard",
			Args: func(v map[string]any) []any {
				return []any{dbusprops.String(v["vconsole_keymap"]), dbusprops.String(v["vconsole_keymap_toggle"]), false, false}
			}},
		{Item: "x11", Fields: []string{"x11_layout", "x11_model", "x11_variant", "x11_options"}, Method: "SetX11Keyboard", Verb: "set X11 keyboard",
			Args: func(v map[string]any) []any {
				return []any{dbusprops.String(v["x11_layout"]), dbusprops.String(v["x11_model"]), dbusprops.String(v["x11_variant"]), dbusprops.String(v["x11_options"]), false, false}
			}},
	},
	NewState: func() any { return &State{} },
	Validate: validate,
}

func init() {
	plugin.Register("locale", func(plugin.Options) plugin.Plugin { return dbusprops.New(Spec) })
}

// Variables are the names locale1 accepts in Locale.
var Variables = []string{"LANG", "LANGUAGE", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE", "LC_MONETARY",
	"LC_MESSAGES", "LC_PAPER", "LC_NAME", "LC_ADDRESS", "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION"}

func validate(st any) state.Problems {
	s := st.(*State)
	var ps state.Problems
	seen := map[string]bool{}
	if s.Locale == nil {
		return ps
	}
	for i, e := range *s.Locale {
		path := fmt.Sprintf("locale[%d]", i)
		k, v, ok := strings.Cut(e, "=")
		if !ok || v == "" {
			ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf("%q: expected NAME=VALUE such as LANG=en_US.UTF-8", e)})
			continue
		}
		known := false
		for _, n := range Variables {
			known = known || n == k
		}
		if !known {
			ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf("unknown locale variable %q (one of %s)", k, strings.Join(Variables, ", "))})
		}
		if seen[k] {
			ps = append(ps, state.Problem{Path: path, Msg: fmt.Sprintf("%s is given twice", k)})
		}
		seen[k] = true
	}
	return ps
}
