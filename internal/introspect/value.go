package introspect

import (
	"fmt"
	"math"
	"reflect"
	"sort"

	"github.com/godbus/dbus/v5"
)

// Value converts a D-Bus value as godbus decodes it into plain JSON data,
// following busctl's --json convention so the two can be compared: a
// variant is {"type": SIG, "data": VALUE}, a struct and an array are JSON
// arrays (ay too), a dict is an object with its keys as strings, object
// paths and signatures are strings, and 64-bit integers stay exact.
// Non-finite doubles, which JSON cannot hold, become the strings "NaN",
// "Infinity" and "-Infinity".
func Value(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case dbus.Variant:
		return map[string]any{"type": x.Signature().String(), "data": Value(x.Value())}
	case dbus.ObjectPath:
		return string(x)
	case dbus.Signature:
		return x.String()
	case dbus.UnixFDIndex:
		return uint32(x)
	case dbus.UnixFD:
		return int32(x)
	case string, bool, uint8, int16, uint16, int32, uint32, int64, uint64:
		return x
	case float64:
		switch {
		case math.IsNaN(x):
			return "NaN"
		case math.IsInf(x, 1):
			return "Infinity"
		case math.IsInf(x, -1):
			return "-Infinity"
		}
		return x
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = Value(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		keys := rv.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i].Interface()) < fmt.Sprint(keys[j].Interface()) })
		for _, k := range keys {
			out[fmt.Sprint(Value(k.Interface()))] = Value(rv.MapIndex(k).Interface())
		}
		return out
	case reflect.Struct:
		out := make([]any, rv.NumField())
		for i := range out {
			out[i] = Value(rv.Field(i).Interface())
		}
		return out
	}
	return fmt.Sprint(v)
}
