package introspect

import (
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	mk := func(level any, extra bool) *Result {
		objs := []Object{{Path: "/a", Interfaces: []ObjIface{{Name: "x.Y",
			Methods:    []Method{{Name: "M", Args: []Arg{{Type: "s"}}}},
			Properties: []PropValue{{Property: Property{Name: "Level", Type: "i", Access: "read"}, Value: level}}}}}}
		if extra {
			objs = append(objs, Object{Path: "/b"})
		}
		return &Result{Services: []Service{{Name: "x.y", Objects: objs}}}
	}
	if d := Compare(mk(1, false), mk(1, false)); len(d) != 0 {
		t.Fatalf("identical results differ: %v", d)
	}
	d := Compare(mk(1, false), mk(2, true))
	var lines []string
	for _, x := range d {
		lines = append(lines, x.String())
	}
	got := strings.Join(lines, "\n")
	for _, w := range []string{"~ x.y /a x.Y.Level: value: 1 → 2", "+ x.y /b: object appeared"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, got)
		}
	}
	d = Compare(mk(1, true), &Result{})
	if len(d) != 1 || d[0].Kind != "-" || !strings.Contains(d[0].What, "service disappeared") {
		t.Fatalf("%v", d)
	}
}
