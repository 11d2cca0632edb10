package dbus

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/op-dbus/op-dbus/internal/state"
)

// State is the dbus part of a state document: properties of objects.
type State struct {
	Objects []Object `json:"objects" jsonschema:"description=D-Bus objects whose named properties are managed"`

	// intro holds the introspection QueryFor read, keyed by objKey, so
	// Plan can check types and writability without I/O. Not serialized.
	intro map[objKey]*introspection
}

// Object names properties of one interface of one object.
type Object struct {
	Bus        string                     `json:"bus,omitempty" jsonschema:"description=system (default)\\, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket"`
	Service    string                     `json:"service" jsonschema:"description=well-known bus name\\, e.g. org.freedesktop.timedate1"`
	Path       string                     `json:"path" jsonschema:"description=object path\\, e.g. /org/freedesktop/timedate1"`
	Interface  string                     `json:"interface" jsonschema:"description=interface of the properties\\, e.g. org.freedesktop.timedate1"`
	Properties map[string]json.RawMessage `json:"properties" jsonschema:"description=property name to value (JSON\\, converted by the property's D-Bus signature)"`
}

// objKey identifies an object on a bus.
type objKey struct{ bus, service, path string }

func busOf(o Object) string {
	if o.Bus == "" {
		return "system"
	}
	return o.Bus
}

func keyOf(o Object) objKey { return objKey{busOf(o), o.Service, o.Path} }

// Item is the op item of one property:
// "objects/org.freedesktop.timedate1/org/freedesktop/timedate1/org.freedesktop.timedate1.NTP",
// with "@<bus>" appended for a bus other than the system bus.
func Item(o Object, prop string) string {
	s := "objects/" + o.Service + o.Path + "/" + o.Interface + "." + prop
	if b := busOf(o); b != "system" {
		s += "@" + b
	}
	return s
}

// propPath is the document path of a property, relative to the plugin key.
func propPath(i int, name string) string {
	return fmt.Sprintf("objects[%d].properties%s", i, field(name))
}

func field(name string) string {
	if ValidMemberName(name) == nil {
		return "." + name
	}
	return fmt.Sprintf("[%q]", name)
}

func validate(s *State) state.Problems {
	var ps state.Problems
	type propKey struct {
		obj             objKey
		iface, property string
	}
	seen := map[propKey]string{}
	for i, o := range s.Objects {
		at := fmt.Sprintf("objects[%d]", i)
		bad := false
		if err := ValidBus(o.Bus); err != nil {
			ps = append(ps, state.Problem{Path: at + ".bus", Msg: err.Error()})
			bad = true
		}
		for _, f := range []struct {
			name, v string
			check   func(string) error
		}{{"service", o.Service, ValidBusName}, {"path", o.Path, ValidObjectPath}, {"interface", o.Interface, ValidInterfaceName}} {
			if f.v == "" {
				ps = append(ps, state.Problem{Path: at + "." + f.name, Msg: "missing"})
				bad = true
			} else if err := f.check(f.v); err != nil {
				ps = append(ps, state.Problem{Path: at + "." + f.name, Msg: fmt.Sprintf("invalid: %q: %v", f.v, err)})
				bad = true
			}
		}
		for _, name := range slices.Sorted(maps.Keys(o.Properties)) {
			p := propPath(i, name)
			if err := ValidMemberName(name); err != nil {
				ps = append(ps, state.Problem{Path: p, Msg: "invalid property name: " + err.Error()})
				continue
			}
			if v, err := decodeJSON(o.Properties[name]); err != nil {
				ps = append(ps, state.Problem{Path: p, Msg: "invalid value: " + err.Error()})
			} else if v == nil {
				ps = append(ps, state.Problem{Path: p, Msg: "null is not a D-Bus value (leave the property out to leave it alone)"})
			}
			if bad {
				continue
			}
			k := propKey{keyOf(o), o.Interface, name}
			if first, dup := seen[k]; dup {
				ps = append(ps, state.Problem{Path: p, Msg: "already declared at " + first + " (same bus, service, path, interface and property)"})
				continue
			}
			seen[k] = p
		}
	}
	return ps
}

// subset keeps the properties of st whose items are listed.
func subset(st *State, items []string) *State {
	want := map[string]bool{}
	for _, it := range items {
		want[it] = true
	}
	out := &State{Objects: []Object{}}
	if st == nil {
		return out
	}
	for _, o := range st.Objects {
		props := map[string]json.RawMessage{}
		for name, v := range o.Properties {
			if want[Item(o, name)] {
				props[name] = v
			}
		}
		if len(props) == 0 {
			continue
		}
		c := o
		c.Properties = props
		out.Objects = append(out.Objects, c)
	}
	return out
}
