package dbusx

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// GetAll reads every property of an interface with
// org.freedesktop.DBus.Properties.GetAll. A service can answer GetAll with
// an error because one property cannot be computed (timedated whose NTP
// unit it cannot query fails GetAll on NTP and CanNTP). Then GetAll
// introspects the object and reads each readable property of the
// interface with Get: it returns what it could read, and, when some
// properties failed, a *PropertyErrors naming them. The caller decides
// which of them it needs. When the object cannot be introspected, its
// introspection lists no readable property of iface, or no property can
// be read with Get either, the error is GetAll's own.
func GetAll(ctx context.Context, obj dbus.BusObject, iface string) (map[string]dbus.Variant, error) {
	ctx, cancel := WithTimeout(ctx)
	defer cancel()
	m, err := getAll(ctx, obj, iface)
	if err == nil || ctx.Err() != nil {
		return m, err
	}
	names, ierr := readableProperties(ctx, obj, iface)
	if ierr != nil || len(names) == 0 {
		return nil, err
	}
	m = map[string]dbus.Variant{}
	pe := &PropertyErrors{Interface: iface, GetAll: err, Failed: map[string]error{}}
	for _, name := range names {
		v, gerr := getOne(ctx, obj, iface, name)
		if gerr != nil {
			pe.Failed[name] = gerr
			continue
		}
		m[name] = v
	}
	switch {
	case len(m) == 0:
		return nil, err // nothing answers Get either (access denied...)
	case len(pe.Failed) > 0:
		return m, pe
	}
	return m, nil
}

// getAll is one Properties.GetAll call.
func getAll(ctx context.Context, obj dbus.BusObject, iface string) (map[string]dbus.Variant, error) {
	c := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, iface)
	if c.Err != nil {
		return nil, callErr(ctx, "GetAll", c.Err)
	}
	// Straight from the decoded body: Store's conversion would flatten a
	// variant holding a variant and retype structs.
	if len(c.Body) == 1 {
		if m, ok := c.Body[0].(map[string]dbus.Variant); ok {
			return m, nil
		}
	}
	return nil, fmt.Errorf("GetAll %s: unexpected reply signature %s", iface, c.Body)
}

// getOne is one Properties.Get call, its value read as GetAll's are.
func getOne(ctx context.Context, obj dbus.BusObject, iface, prop string) (dbus.Variant, error) {
	c := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, iface, prop)
	if c.Err != nil {
		return dbus.Variant{}, callErr(ctx, "Get", c.Err)
	}
	if len(c.Body) == 1 {
		if v, ok := c.Body[0].(dbus.Variant); ok {
			return v, nil
		}
	}
	return dbus.Variant{}, fmt.Errorf("Get %s.%s: unexpected reply %v", iface, prop, c.Body)
}

// readableProperties introspects obj and returns the properties of iface
// that can be read (access "read" or "readwrite"), in document order.
func readableProperties(ctx context.Context, obj dbus.BusObject, iface string) ([]string, error) {
	var data string
	if err := Call(ctx, obj, "org.freedesktop.DBus.Introspectable.Introspect", []any{&data}); err != nil {
		return nil, err
	}
	var node introspect.Node
	if err := xml.Unmarshal([]byte(data), &node); err != nil {
		return nil, fmt.Errorf("Introspect: %w", err)
	}
	for _, i := range node.Interfaces {
		if i.Name != iface {
			continue
		}
		var names []string
		for _, p := range i.Properties {
			if p.Access == "read" || p.Access == "readwrite" {
				names = append(names, p.Name)
			}
		}
		return names, nil
	}
	return nil, nil
}

// PropertyErrors says which properties of an interface could not be read
// after Properties.GetAll failed and each readable property was asked for
// with Get. GetAll returns it beside the properties it did read.
type PropertyErrors struct {
	Interface string
	// GetAll is why Properties.GetAll failed.
	GetAll error
	// Failed holds, for each property Get could not read, why.
	Failed map[string]error
}

// Names are the properties that could not be read, sorted.
func (e *PropertyErrors) Names() []string { return slices.Sorted(maps.Keys(e.Failed)) }

func (e *PropertyErrors) Error() string {
	parts := make([]string, 0, len(e.Failed))
	for _, n := range e.Names() {
		parts = append(parts, n+" ("+e.Failed[n].Error()+")")
	}
	what := "property"
	if len(parts) > 1 {
		what = "properties"
	}
	return fmt.Sprintf("%s: cannot read %s %s, and %v", e.Interface, what, strings.Join(parts, ", "), e.GetAll)
}

// Unwrap gives errors.Is and errors.As the GetAll error.
func (e *PropertyErrors) Unwrap() error { return e.GetAll }

// Needed is err as it matters to a caller of GetAll that needs props: a
// *PropertyErrors in which none of props failed becomes nil (what failed
// the caller leaves out), one in which some did becomes a *PropertyErrors
// naming those alone. Any other error is returned as it is.
func Needed(err error, props ...string) error {
	pe, ok := errors.AsType[*PropertyErrors](err)
	if !ok {
		return err
	}
	need := &PropertyErrors{Interface: pe.Interface, GetAll: pe.GetAll, Failed: map[string]error{}}
	for _, p := range props {
		if e, failed := pe.Failed[p]; failed {
			need.Failed[p] = e
		}
	}
	if len(need.Failed) == 0 {
		return nil
	}
	return need
}
