package dbus

import (
	"errors"
	"fmt"
	"strings"
)

// maxNameLen is the D-Bus limit for bus, interface and member names.
const maxNameLen = 255

// ValidBusName checks a well-known bus name ("org.freedesktop.hostname1")
// by the D-Bus specification: 2 or more dot-separated elements of
// [A-Za-z0-9_-], none empty or starting with a digit, 255 bytes at most.
// Unique names (":1.42") are refused: they change with every connection,
// so a state document cannot name one.
func ValidBusName(s string) error {
	if s == "" {
		return errors.New("empty bus name")
	}
	if s[0] == ':' {
		return errors.New("unique connection names (\":1.42\") change on every start; name the service by its well-known name")
	}
	return dotted(s, "bus name", true)
}

// ValidInterfaceName checks an interface name ("org.freedesktop.DBus.Properties"):
// like a bus name, but without '-'.
func ValidInterfaceName(s string) error {
	if s == "" {
		return errors.New("empty interface name")
	}
	return dotted(s, "interface name", false)
}

func dotted(s, what string, hyphen bool) error {
	if len(s) > maxNameLen {
		return fmt.Errorf("%s longer than %d bytes", what, maxNameLen)
	}
	elems := strings.Split(s, ".")
	if len(elems) < 2 {
		return fmt.Errorf("%s needs at least two dot-separated elements (like org.example.Name)", what)
	}
	for _, e := range elems {
		if e == "" {
			return fmt.Errorf("%s has an empty element (leading, trailing or double dot)", what)
		}
		if e[0] >= '0' && e[0] <= '9' {
			return fmt.Errorf("%s element %q starts with a digit", what, e)
		}
		for i := 0; i < len(e); i++ {
			if !nameByte(e[i], hyphen) {
				allowed := "letters, digits and '_'"
				if hyphen {
					allowed = "letters, digits, '_' and '-'"
				}
				return fmt.Errorf("%s has character %s (allowed: %s)", what, quoteByte(e[i]), allowed)
			}
		}
	}
	return nil
}

// ValidMemberName checks a method, signal or property name ("SetNTP"):
// 1-255 bytes of [A-Za-z0-9_], not starting with a digit, no dots.
func ValidMemberName(s string) error {
	if s == "" {
		return errors.New("empty member name")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("member name longer than %d bytes", maxNameLen)
	}
	if s[0] >= '0' && s[0] <= '9' {
		return errors.New("member name starts with a digit")
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return errors.New("member name contains '.' (a member name is one element, like SetNTP)")
		}
		if !nameByte(s[i], false) {
			return fmt.Errorf("member name has character %s (allowed: letters, digits and '_')", quoteByte(s[i]))
		}
	}
	return nil
}

// ValidObjectPath checks an object path: "/" or "/"-separated non-empty
// elements of [A-Za-z0-9_], no trailing '/'.
func ValidObjectPath(s string) error {
	if s == "" {
		return errors.New("empty object path")
	}
	if s[0] != '/' {
		return errors.New("object path must start with '/'")
	}
	if s == "/" {
		return nil
	}
	if s[len(s)-1] == '/' {
		return errors.New("object path must not end with '/'")
	}
	for _, e := range strings.Split(s[1:], "/") {
		if e == "" {
			return errors.New("object path has an empty element (\"//\")")
		}
		for i := 0; i < len(e); i++ {
			if !nameByte(e[i], false) {
				return fmt.Errorf("object path has character %s (allowed: letters, digits, '_' and '/' between elements)", quoteByte(e[i]))
			}
		}
	}
	return nil
}

// ValidBus checks the "bus" field of an object: "system", "session" or a
// D-Bus address ("unix:path=/run/dbus/system_bus_socket").
func ValidBus(s string) error {
	switch s {
	case "", "system", "session":
		return nil
	}
	for _, a := range strings.Split(s, ";") {
		i := strings.IndexByte(a, ':')
		if i <= 0 {
			return fmt.Errorf("bus %q: expected system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket", s)
		}
		for _, c := range a[:i] {
			if !(c >= 'a' && c <= 'z' || c == '-') {
				return fmt.Errorf("bus %q: %q is not a D-Bus transport (unix, tcp...)", s, a[:i])
			}
		}
		if rest := a[i+1:]; rest != "" {
			for _, kv := range strings.Split(rest, ",") {
				if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
					return fmt.Errorf("bus %q: %q is not key=value", s, kv)
				}
			}
		}
	}
	return nil
}

func nameByte(c byte, hyphen bool) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || hyphen && c == '-'
}

func quoteByte(c byte) string {
	if c < 0x20 || c >= 0x7f {
		return fmt.Sprintf("0x%02x", c)
	}
	return fmt.Sprintf("%q", rune(c))
}
