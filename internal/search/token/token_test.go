package token

import (
	"reflect"
	"testing"
	"unicode/utf8"
)

func TestTokens(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"SetStaticHostname", []string{"set", "static", "hostnam", "setstatichostnam"}},
		{"NTPSynchronized", []string{"ntp", "synchroniz", "ntpsynchroniz"}},
		{"X11Keyboard", []string{"x11", "keyboard", "x11keyboard"}},
		{"org.freedesktop.timedate1", []string{"org", "freedesktop", "timedate1", "timedate", "1"}},
		{"/org/freedesktop/systemd1/unit/default_2etarget", []string{"org", "freedesktop", "systemd1", "systemd", "1", "unit", "default", "target"}},
		{"dbus-broken_2dx.service", []string{"dbus", "broken", "x", "servic"}},
		{"use_ntp", []string{"use", "ntp"}},
		{"item0042", []string{"item0042", "item", "42"}},
		{"which units failed", []string{"unit", "fail"}},
		{"stopped stopping", []string{"stop", "stop"}},
		{"synchronization synchronized", []string{"synchroniz", "synchroniz"}},
		{"configuration configure location", []string{"configur", "configur", "location"}},
		{"CanNTP", []string{"can", "ntp", "canntp"}},
		{"", nil},
	} {
		if got := Tokens(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Tokens(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func FuzzTokens(f *testing.F) {
	for _, s := range []string{"SetTimezone", "default_2etarget", "a_zz_2", "\xff\xfe", "ÄÖÜ_2e", "x_", "_2", "item0000", "ABCdefGHI"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range Tokens(s) {
			if tok == "" || len(tok) > 4*maxWord {
				t.Fatalf("bad token %q from %q", tok, s)
			}
			if utf8.ValidString(s) && !utf8.ValidString(tok) {
				t.Fatalf("invalid UTF-8 token %q from valid %q", tok, s)
			}
		}
	})
}
