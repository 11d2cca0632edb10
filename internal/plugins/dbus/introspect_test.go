package dbus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readIntrospection(t testing.TB, name string) *introspection {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "introspect", name))
	if err != nil {
		t.Fatal(err)
	}
	in, err := parseIntrospection(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return in
}

func TestParseIntrospectionHostname1(t *testing.T) {
	in := readIntrospection(t, "hostname1.xml")
	ii := in.Interfaces["org.freedesktop.hostname1"]
	if ii == nil {
		t.Fatalf("no hostname1 interface; have %s", names(in.Interfaces))
	}
	loc := ii.Properties["Location"]
	if loc == nil || loc.Type.str != "s" || !loc.Read || loc.Write {
		t.Errorf("Location: %+v", loc)
	}
	m := ii.Methods["SetLocation"]
	if m == nil || m.InSignature() != "sb" {
		t.Errorf("SetLocation: %+v", m)
	}
	if _, ok := in.Interfaces["org.freedesktop.DBus.Properties"].Methods["Set"]; !ok {
		t.Errorf("Properties.Set missing")
	}
}

func TestParseIntrospectionEdges(t *testing.T) {
	in := readIntrospection(t, "edge-invalid-members.xml")
	if len(in.Interfaces) != 1 {
		t.Fatalf("interfaces: %s", names(in.Interfaces))
	}
	ii := in.Interfaces["org.example.Good"]
	if p := ii.Properties["Ok"]; p == nil || p.Type.str != "a{sv}" || !p.Read || !p.Write {
		t.Errorf("Ok (first declaration wins): %+v", p)
	}
	if ii.Properties["Shadowed"] != nil {
		t.Errorf("a second declaration of the interface was merged")
	}
	for name, why := range map[string]string{
		"BadType":   "dict key must be a basic type",
		"BadAccess": `unknown access "sometimes"`,
		"Broken":    "unclosed",
		"Sideways":  `direction "up"`,
	} {
		if !strings.Contains(ii.Invalid[name], why) {
			t.Errorf("%s: invalid reason %q, want %q", name, ii.Invalid[name], why)
		}
		if ii.Properties[name] != nil || ii.Methods[name] != nil {
			t.Errorf("%s kept", name)
		}
	}
	if m := ii.Methods["SetIt"]; m == nil || m.InSignature() != "sb" {
		t.Errorf("SetIt (in-args, direction defaults to in): %+v", m)
	}

	for _, c := range []struct{ in, want string }{
		{"", "empty introspection XML"},
		{"   \n", "empty introspection XML"},
		{"<node><interface>", "invalid introspection XML"},
		{"<nope/>", "invalid introspection XML"},
		{"not xml", "invalid introspection XML"},
		{"<node/>" + strings.Repeat(" ", maxIntrospectSize), "more than the 4 MiB limit"},
	} {
		_, err := parseIntrospection([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.30q: got %v, want %q", c.in, err, c.want)
		}
	}
	if in, err := parseIntrospection([]byte("<node/>")); err != nil || len(in.Interfaces) != 0 {
		t.Errorf("empty node: %v %v", in, err)
	}
}

// FuzzParseIntrospection: the parser never panics, and whatever it keeps
// is valid (names, signatures) so the rest of the plugin can trust it.
// Seeds: testdata/introspect/*.xml and testdata/fuzz/FuzzParseIntrospection.
func FuzzParseIntrospection(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "introspect", "*.xml"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := parseIntrospection(data)
		if err != nil {
			if in != nil {
				t.Fatalf("result with an error")
			}
			return
		}
		for name, ii := range in.Interfaces {
			if ValidInterfaceName(name) != nil || ii.Name != name {
				t.Fatalf("kept interface %q", name)
			}
			for pn, p := range ii.Properties {
				if ValidMemberName(pn) != nil || p.Name != pn {
					t.Fatalf("kept property %q", pn)
				}
				if st, err := parseSignature(p.Type.str); err != nil || st.str != p.Type.str {
					t.Fatalf("property %s type %q: %v", pn, p.Type.str, err)
				}
				if !p.Read && !p.Write {
					t.Fatalf("property %s neither readable nor writable", pn)
				}
			}
			for mn, m := range ii.Methods {
				if ValidMemberName(mn) != nil || m.Name != mn {
					t.Fatalf("kept method %q", mn)
				}
				if _, err := parseSignatures(m.InSignature()); err != nil && len(m.InSignature()) <= maxSigLen {
					t.Fatalf("method %s in-signature %q: %v", mn, m.InSignature(), err)
				}
			}
		}
	})
}
