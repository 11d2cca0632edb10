package dbus

import (
	"strings"
	"testing"
)

func TestValidNames(t *testing.T) {
	long := strings.Repeat("a", 250) + ".bcdef"
	cases := []struct {
		check func(string) error
		in    string
		ok    bool
		want  string // part of the error
	}{
		{ValidBusName, "org.freedesktop.timedate1", true, ""},
		{ValidBusName, "org.example.with-hyphen_1", true, ""},
		{ValidBusName, "a.b", true, ""},
		{ValidBusName, "", false, "empty"},
		{ValidBusName, "org", false, "at least two"},
		{ValidBusName, "org..x", false, "empty element"},
		{ValidBusName, ".org.x", false, "empty element"},
		{ValidBusName, "org.x.", false, "empty element"},
		{ValidBusName, "org.1x", false, "starts with a digit"},
		{ValidBusName, "org.ex ample", false, `character ' '`},
		{ValidBusName, "org.ex/ample", false, `character '/'`},
		{ValidBusName, "org.exämple", false, "0xc3"},
		{ValidBusName, ":1.42", false, "unique"},
		{ValidBusName, long, false, "longer than 255"},
		{ValidInterfaceName, "org.freedesktop.DBus.Properties", true, ""},
		{ValidInterfaceName, "org.my-iface.X", false, `character '-'`},
		{ValidInterfaceName, "Properties", false, "at least two"},
		{ValidInterfaceName, "org.x.2y", false, "digit"},
		{ValidMemberName, "SetNTP", true, ""},
		{ValidMemberName, "_x9", true, ""},
		{ValidMemberName, "", false, "empty"},
		{ValidMemberName, "9x", false, "digit"},
		{ValidMemberName, "org.freedesktop.systemd1.Manager.PowerOff", false, "contains '.'"},
		{ValidMemberName, "Set-NTP", false, `character '-'`},
		{ValidMemberName, strings.Repeat("a", 256), false, "longer than 255"},
		{ValidObjectPath, "/", true, ""},
		{ValidObjectPath, "/org/freedesktop/timedate1", true, ""},
		{ValidObjectPath, "/a_b/C9", true, ""},
		{ValidObjectPath, "", false, "empty"},
		{ValidObjectPath, "org/x", false, "start with '/'"},
		{ValidObjectPath, "/org/", false, "end with '/'"},
		{ValidObjectPath, "/org//x", false, "empty element"},
		{ValidObjectPath, "/org/x-y", false, `character '-'`},
		{ValidObjectPath, "/org/x.y", false, `character '.'`},
		{ValidBus, "", true, ""},
		{ValidBus, "system", true, ""},
		{ValidBus, "session", true, ""},
		{ValidBus, "unix:path=/run/dbus/system_bus_socket", true, ""},
		{ValidBus, "unix:path=/a;tcp:host=localhost,port=1", true, ""},
		{ValidBus, "systm", false, "expected system, session"},
		{ValidBus, "UNIX:path=/x", false, "not a D-Bus transport"},
		{ValidBus, "unix:path", false, "not key=value"},
	}
	for _, c := range cases {
		err := c.check(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: got %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not say %q", c.in, err, c.want)
		}
	}
}

func TestParseSignature(t *testing.T) {
	good := []string{"s", "b", "y", "n", "q", "i", "u", "x", "t", "d", "h", "o", "g", "v",
		"as", "aai", "a{sv}", "a{ss}", "a{oa{sa{sv}}}", "(si)", "(s(ii)av)", "a(si)", "ay",
		strings.Repeat("a", 32) + "s", strings.Repeat("(", 32) + "s" + strings.Repeat(")", 32)}
	for _, s := range good {
		st, err := parseSignature(s)
		if err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if st.str != s {
			t.Errorf("%q: parsed as %q", s, st.str)
		}
	}
	bad := map[string]string{
		"":                            "0 types",
		"ss":                          "2 types",
		"a":                           "ends in the middle",
		"a{vs}":                       "dict key must be a basic type",
		"a{s}":                        "exactly a key and a value",
		"a{sss}":                      "exactly a key and a value",
		"{ss}":                        "only appear as an array element",
		"()":                          "empty struct",
		"(s":                          "unclosed",
		"z":                           "unknown type code 'z'",
		"a{(s)s}":                     "basic type",
		strings.Repeat("a", 33) + "s": "arrays nested deeper than 32",
		strings.Repeat("(", 33) + "s" + strings.Repeat(")", 33): "structs nested deeper than 32",
		strings.Repeat("s", 256):                                "longer than 255",
	}
	for s, want := range bad {
		_, err := parseSignature(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: got %v, want %q", s, err, want)
		}
	}
	ts, err := parseSignatures("bbs")
	if err != nil || len(ts) != 3 {
		t.Errorf("bbs: %v %v", ts, err)
	}
}
