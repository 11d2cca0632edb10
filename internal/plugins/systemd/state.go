package systemd

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the systemd part of a state document.
type State struct {
	// Units maps a unit name ("nginx.service") to what it should be.
	Units map[string]*Unit `json:"units,omitempty" jsonschema:"description=Units by full name (nginx.service). Units not named here are left alone."`
}

// Unit is one unit. Desired fields are optional: an absent field is not
// managed. Read-only fields are filled by query and ignored by plan.
type Unit struct {
	ActiveState string `json:"active_state,omitempty" jsonschema:"enum=active,enum=inactive,description=active: started; inactive: stopped (a failed unit counts as inactive)"`
	Enabled     *bool  `json:"enabled,omitempty" jsonschema:"description=Enabled at boot through its [Install] section"`
	Masked      *bool  `json:"masked,omitempty" jsonschema:"description=Masked: linked to /dev/null so it cannot start"`

	// Read-only (reported by query, ignored by plan).
	SubState         string `json:"sub_state,omitempty" jsonschema:"readOnly=true,description=read-only: systemd's SubState (running\\, exited\\, dead\\, failed...)"`
	RawActiveState   string `json:"raw_active_state,omitempty" jsonschema:"readOnly=true,description=read-only: systemd's ActiveState (active\\, failed\\, activating...)"`
	UnitFileState    string `json:"unit_file_state,omitempty" jsonschema:"readOnly=true,description=read-only: enabled\\, disabled\\, static\\, masked\\, ..."`
	NeedDaemonReload bool   `json:"need_daemon_reload,omitempty" jsonschema:"readOnly=true,description=read-only: the unit file changed on disk since it was loaded"`
}

var unitTypes = []string{".service", ".socket", ".target", ".device", ".mount", ".automount", ".swap", ".timer", ".path", ".slice", ".scope"}

// ValidUnitName follows systemd's unit_name_is_valid: a prefix of
// [A-Za-z0-9:_.\-], optionally "@instance" (instance may be empty only for a
// template), and a known type suffix; at most 255 bytes.
func ValidUnitName(name string) error {
	if name == "" {
		return fmt.Errorf("empty unit name")
	}
	if len(name) > 255 {
		return fmt.Errorf("unit name longer than 255 bytes")
	}
	var suffix string
	for _, t := range unitTypes {
		if strings.HasSuffix(name, t) {
			suffix = t
			break
		}
	}
	if suffix == "" {
		return fmt.Errorf("invalid unit name: must end in a unit type (%s)", strings.Join(unitTypes, ", "))
	}
	base := strings.TrimSuffix(name, suffix)
	if base == "" {
		return fmt.Errorf("invalid unit name: nothing before %q", suffix)
	}
	prefix, inst, hasAt := strings.Cut(base, "@")
	if prefix == "" {
		return fmt.Errorf("invalid unit name: nothing before '@'")
	}
	check := func(s string, at bool) error {
		for _, r := range s {
			switch {
			case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			case r == ':' || r == '_' || r == '.' || r == '-' || r == '\\':
			case at && r == '@':
			case r == '/':
				return fmt.Errorf("invalid unit name: contains '/' (give the unit name, not a path)")
			case r == ' ':
				return fmt.Errorf("invalid unit name: contains a space (systemd escapes it as \\x20; see systemd-escape)")
			default:
				return fmt.Errorf("invalid unit name: character %q is not allowed (allowed: letters, digits, : _ . - \\ @)", r)
			}
		}
		return nil
	}
	if err := check(prefix, false); err != nil {
		return err
	}
	if hasAt {
		if err := check(inst, true); err != nil {
			return err
		}
	}
	return nil
}

// IsTemplate reports "name@.type" units, which cannot be started.
func IsTemplate(name string) bool {
	i := strings.LastIndexByte(name, '.')
	return i > 0 && strings.HasSuffix(name[:i], "@")
}

// Validate implements plugin.Validator.
func (p *Plugin) Validate(st any) state.Problems {
	s := st.(*State)
	var ps state.Problems
	names := slices.Sorted(maps.Keys(s.Units))
	for _, name := range names {
		u := s.Units[name]
		path := fmt.Sprintf("units[%q]", name)
		if err := ValidUnitName(name); err != nil {
			ps = append(ps, state.Problem{Path: path, Msg: err.Error()})
			continue
		}
		if u == nil {
			continue
		}
		switch u.ActiveState {
		case "", "active", "inactive":
		default:
			ps = append(ps, state.Problem{Path: path + ".active_state", Msg: fmt.Sprintf("must be \"active\" or \"inactive\", got %q", u.ActiveState)})
		}
		if IsTemplate(name) && u.ActiveState != "" {
			ps = append(ps, state.Problem{Path: path + ".active_state", Msg: "a template unit cannot be started or stopped; name an instance (foo@bar.service)"})
		}
		if u.Masked != nil && *u.Masked {
			if u.ActiveState == "active" {
				ps = append(ps, state.Problem{Path: path, Msg: "masked: true and active_state: \"active\" contradict (a masked unit cannot start)"})
			}
			if u.Enabled != nil && *u.Enabled {
				ps = append(ps, state.Problem{Path: path, Msg: "masked: true and enabled: true contradict"})
			}
		}
	}
	return ps
}
