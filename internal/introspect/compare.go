package introspect

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
)

// Difference is one thing that appeared, disappeared or changed between two
// introspections.
type Difference struct {
	// Kind is "+" (appeared), "-" (disappeared) or "~" (changed).
	Kind string `json:"kind"`
	// Where: "service", "service path", "service path interface" or
	// "service path interface.Member".
	Where  string `json:"where"`
	What   string `json:"what"`
	Before any    `json:"before,omitempty"`
	After  any    `json:"after,omitempty"`
}

func (d Difference) String() string {
	s := fmt.Sprintf("%s %s: %s", d.Kind, d.Where, d.What)
	if d.Kind == "~" {
		s += fmt.Sprintf(": %s → %s", show(d.Before), show(d.After))
	}
	return s
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 120 {
		return string(b[:117]) + "..."
	}
	return string(b)
}

// Compare lists what differs between two results, in a stable order.
// Volatile fields (stats, owners' unique names) are not compared.
func Compare(before, after *Result) []Difference {
	var out []Difference
	bs, as := indexServices(before), indexServices(after)
	for _, name := range unionKeys(bs, as) {
		b, a := bs[name], as[name]
		switch {
		case b == nil:
			out = append(out, Difference{Kind: "+", Where: name, What: fmt.Sprintf("service appeared (%d objects)", len(a.Objects))})
			continue
		case a == nil:
			out = append(out, Difference{Kind: "-", Where: name, What: fmt.Sprintf("service disappeared (had %d objects)", len(b.Objects))})
			continue
		}
		if b.Error != a.Error {
			out = append(out, Difference{Kind: "~", Where: name, What: "error", Before: b.Error, After: a.Error})
		}
		bo, ao := indexObjects(b), indexObjects(a)
		for _, p := range unionKeys(bo, ao) {
			where := name + " " + p
			ob, oa := bo[p], ao[p]
			switch {
			case ob == nil:
				out = append(out, Difference{Kind: "+", Where: where, What: "object appeared"})
				continue
			case oa == nil:
				out = append(out, Difference{Kind: "-", Where: where, What: "object disappeared"})
				continue
			}
			out = append(out, compareObject(where, ob, oa)...)
		}
	}
	return out
}

func compareObject(where string, b, a *Object) []Difference {
	var out []Difference
	if b.Error != a.Error {
		out = append(out, Difference{Kind: "~", Where: where, What: "error", Before: b.Error, After: a.Error})
	}
	bi, ai := map[string]*ObjIface{}, map[string]*ObjIface{}
	for i := range b.Interfaces {
		bi[b.Interfaces[i].Name] = &b.Interfaces[i]
	}
	for i := range a.Interfaces {
		ai[a.Interfaces[i].Name] = &a.Interfaces[i]
	}
	for _, n := range unionKeys(bi, ai) {
		w := where + " " + n
		ib, ia := bi[n], ai[n]
		switch {
		case ib == nil:
			out = append(out, Difference{Kind: "+", Where: w, What: "interface appeared"})
			continue
		case ia == nil:
			out = append(out, Difference{Kind: "-", Where: w, What: "interface disappeared"})
			continue
		}
		out = append(out, members(w, "method", byName(ib.Methods, func(m Method) string { return m.Name }), byName(ia.Methods, func(m Method) string { return m.Name }))...)
		out = append(out, members(w, "signal", byName(ib.Signals, func(m Signal) string { return m.Name }), byName(ia.Signals, func(m Signal) string { return m.Name }))...)
		pb := byName(ib.Properties, func(p PropValue) string { return p.Name })
		pa := byName(ia.Properties, func(p PropValue) string { return p.Name })
		for _, pn := range unionKeys(pb, pa) {
			pw := w + "." + pn
			x, y := pb[pn], pa[pn]
			switch {
			case x == nil:
				out = append(out, Difference{Kind: "+", Where: pw, What: "property appeared"})
			case y == nil:
				out = append(out, Difference{Kind: "-", Where: pw, What: "property disappeared"})
			case x.Type != y.Type || x.Access != y.Access:
				out = append(out, Difference{Kind: "~", Where: pw, What: "declaration", Before: x.Type + " " + x.Access, After: y.Type + " " + y.Access})
			case !reflect.DeepEqual(x.Value, y.Value):
				out = append(out, Difference{Kind: "~", Where: pw, What: "value", Before: x.Value, After: y.Value})
			}
		}
	}
	return out
}

func members[T any](where, kind string, b, a map[string]*T) []Difference {
	var out []Difference
	for _, n := range unionKeys(b, a) {
		w := where + "." + n
		x, y := b[n], a[n]
		switch {
		case x == nil:
			out = append(out, Difference{Kind: "+", Where: w, What: kind + " appeared"})
		case y == nil:
			out = append(out, Difference{Kind: "-", Where: w, What: kind + " disappeared"})
		case !reflect.DeepEqual(*x, *y):
			out = append(out, Difference{Kind: "~", Where: w, What: kind + " signature", Before: *x, After: *y})
		}
	}
	return out
}

func byName[T any](xs []T, name func(T) string) map[string]*T {
	m := make(map[string]*T, len(xs))
	for i := range xs {
		m[name(xs[i])] = &xs[i]
	}
	return m
}

func indexServices(r *Result) map[string]*Service {
	m := map[string]*Service{}
	for i := range r.Services {
		m[r.Services[i].Name] = &r.Services[i]
	}
	return m
}

func indexObjects(s *Service) map[string]*Object {
	m := map[string]*Object{}
	for i := range s.Objects {
		m[s.Objects[i].Path] = &s.Objects[i]
	}
	return m
}

func unionKeys[V any](a, b map[string]V) []string {
	seen := map[string]bool{}
	var out []string
	for k := range a {
		seen[k] = true
		out = append(out, k)
	}
	for k := range b {
		if !seen[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
