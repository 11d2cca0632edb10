package introspect

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

const goodXML = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
 <interface name="org.example.Thing1">
  <method name="Frob"><arg name="x" type="a{sv}" direction="in"/><arg type="(si)" direction="out"/>
   <annotation name="org.freedesktop.DBus.Deprecated" value="true"/></method>
  <signal name="Changed"><arg name="what" type="s"/></signal>
  <property name="Level" type="i" access="readwrite"/>
  <property name="Secret" type="s" access="write"/>
 </interface>
 <node name="child"/>
 <node name="other_1"/>
</node>`

func TestParseXML(t *testing.T) {
	n, err := ParseXML([]byte(goodXML))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Interfaces) != 1 || len(n.Children) != 2 || n.Children[1].Name != "other_1" {
		t.Fatalf("parsed %+v", n)
	}
	m := n.Interfaces[0].Methods[0]
	if m.Name != "Frob" || m.Args[0].Type != "a{sv}" || m.Args[1].Direction != "out" || m.Annotations[0].Value != "true" {
		t.Fatalf("method %+v", m)
	}
}

func TestParseXMLRejects(t *testing.T) {
	for _, tc := range []struct{ name, xml, want string }{
		{"empty", "  ", "empty"},
		{"not xml", "hello", "malformed"},
		{"unclosed", "<node><interface name=\"a.b\">", "malformed"},
		{"bad interface", `<node><interface name="nodots"/></node>`, "invalid interface name"},
		{"bad member", `<node><interface name="a.b"><method name="9x"/></interface></node>`, "invalid method name"},
		{"bad signature", `<node><interface name="a.b"><method name="M"><arg type="a{vs}"/></method></interface></node>`, "invalid type signature"},
		{"two types", `<node><interface name="a.b"><property name="P" type="ss" access="read"/></interface></node>`, "2 complete types"},
		{"bad access", `<node><interface name="a.b"><property name="P" type="s" access="rw"/></interface></node>`, "access"},
		{"bad direction", `<node><interface name="a.b"><method name="M"><arg type="s" direction="sideways"/></method></interface></node>`, "direction"},
		{"absolute child", `<node><node name="/abs"/></node>`, "not a relative path"},
		{"bad child", `<node><node name="a-b"/></node>`, "not a valid object path element"},
		{"entity bomb", `<!DOCTYPE node [<!ENTITY a "aaaa">]><node><interface name="&a;.b"/></node>`, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseXML([]byte(tc.xml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
	huge := make([]byte, MaxXML+1)
	if _, err := ParseXML(huge); err == nil || !strings.Contains(err.Error(), "over the 8.0 MiB limit") {
		t.Fatalf("huge: %v", err)
	}
}

func TestCompleteTypes(t *testing.T) {
	for sig, n := range map[string]int{"s": 1, "as": 1, "a{sv}": 1, "(si)": 1, "a(sa{sv})": 1, "ss": 2, "aai": 1, "sa{sv}as": 3, "v": 1} {
		if got := completeTypes(sig); got != n {
			t.Errorf("%s: %d, want %d", sig, got, n)
		}
	}
}

func TestValueFollowsBusctlJSON(t *testing.T) {
	v := Value(map[string]dbus.Variant{
		"a": dbus.MakeVariant(uint64(math.MaxUint64)),
		"b": dbus.MakeVariant([]byte{1, 2}),
		"c": dbus.MakeVariant(struct {
			A string
			B int32
		}{"x", -3}),
		"d": dbus.MakeVariant(dbus.ObjectPath("/x")),
		"e": dbus.MakeVariant(math.NaN()),
		"f": dbus.MakeVariant(dbus.MakeVariant("inner")),
	})
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":{"data":18446744073709551615,"type":"t"},"b":{"data":[1,2],"type":"ay"},"c":{"data":["x",-3],"type":"(si)"},"d":{"data":"/x","type":"o"},"e":{"data":"NaN","type":"d"},"f":{"data":{"data":"inner","type":"s"},"type":"v"}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestValidNames(t *testing.T) {
	for s, ok := range map[string]bool{"org.freedesktop.DBus": true, "a.b": true, "a": false, "a..b": false, "a.1b": false, "org.foo-bar.x": true, ":1.42": true, ":1": false, "a.b/c": false, strings.Repeat("a.", 200) + "b": false} {
		if ValidBusName(s) != ok {
			t.Errorf("ValidBusName(%q) = %v", s, !ok)
		}
	}
	if ValidInterface("org.foo-bar.x") {
		t.Errorf("interfaces take no '-'")
	}
	if !ValidMember("Get_All2") || ValidMember("a.b") || ValidMember("") {
		t.Errorf("ValidMember")
	}
}

func FuzzParseXML(f *testing.F) {
	f.Add([]byte(goodXML))
	f.Add([]byte(`<node><node name="a"><interface name="x.y"><property name="P" type="a(sv)" access="read"/></interface></node></node>`))
	f.Add([]byte(`<node/>`))
	f.Add([]byte(`<?xml version="1.0"?><node name="/"><interface name="a.b"><signal name="S"><arg type="v"/></signal></interface></node>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseXML(data)
		if err != nil {
			return
		}
		// Whatever is accepted is well-formed: every type one complete type.
		for _, i := range n.Interfaces {
			if !ValidInterface(i.Name) {
				t.Fatalf("accepted interface %q", i.Name)
			}
			for _, p := range i.Properties {
				if completeTypes(p.Type) != 1 {
					t.Fatalf("accepted property type %q", p.Type)
				}
			}
		}
	})
}
