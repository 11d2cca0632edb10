// Package introspect walks a whole D-Bus bus: every service's object tree,
// each object's interfaces, members and annotations, and every readable
// property's typed value. It parses introspection XML strictly and bounds
// every call, so a service that hangs, denies access or returns garbage is
// recorded with its error and never stops the walk.
package introspect

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// MaxXML bounds one object's introspection XML. The largest real documents
// (systemd's manager object) are around 60 KB; more than this is a broken or
// hostile service, and parsing it would cost memory for nothing.
const MaxXML = 8 << 20

// Node is one object's introspection data.
type Node struct {
	XMLName    xml.Name    `xml:"node"`
	Name       string      `xml:"name,attr"`
	Interfaces []Interface `xml:"interface"`
	Children   []Node      `xml:"node"`
}

// Interface is one interface of an object.
type Interface struct {
	Name        string       `xml:"name,attr" json:"name"`
	Methods     []Method     `xml:"method" json:"methods,omitempty"`
	Signals     []Signal     `xml:"signal" json:"signals,omitempty"`
	Properties  []Property   `xml:"property" json:"properties,omitempty"`
	Annotations []Annotation `xml:"annotation" json:"annotations,omitempty"`
}

// Method is a method with its arguments.
type Method struct {
	Name        string       `xml:"name,attr" json:"name"`
	Args        []Arg        `xml:"arg" json:"args,omitempty"`
	Annotations []Annotation `xml:"annotation" json:"annotations,omitempty"`
}

// Signal is a signal with its arguments.
type Signal struct {
	Name        string       `xml:"name,attr" json:"name"`
	Args        []Arg        `xml:"arg" json:"args,omitempty"`
	Annotations []Annotation `xml:"annotation" json:"annotations,omitempty"`
}

// Property is a property's declaration.
type Property struct {
	Name        string       `xml:"name,attr" json:"name"`
	Type        string       `xml:"type,attr" json:"type"`
	Access      string       `xml:"access,attr" json:"access"`
	Annotations []Annotation `xml:"annotation" json:"annotations,omitempty"`
}

// Arg is a method or signal argument. Direction is "in" or "out" for
// methods (default "in") and empty for signals.
type Arg struct {
	Name      string `xml:"name,attr" json:"name,omitempty"`
	Type      string `xml:"type,attr" json:"type"`
	Direction string `xml:"direction,attr" json:"direction,omitempty"`
}

// Annotation is a name/value pair.
type Annotation struct {
	Name  string `xml:"name,attr" json:"name"`
	Value string `xml:"value,attr" json:"value"`
}

// ParseXML parses and checks one introspection document: names must be
// valid D-Bus names, types valid signatures, access one of read, write,
// readwrite. The DOCTYPE is ignored; nothing external is ever fetched.
func ParseXML(data []byte) (*Node, error) {
	if len(data) > MaxXML {
		return nil, fmt.Errorf("introspection XML is %s, over the %s limit", size(len(data)), size(MaxXML))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("empty introspection XML")
	}
	var n Node
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&n); err != nil {
		return nil, fmt.Errorf("malformed introspection XML: %v", err)
	}
	if err := n.check(0); err != nil {
		return nil, fmt.Errorf("invalid introspection XML: %v", err)
	}
	return &n, nil
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func (n *Node) check(depth int) error {
	if depth > 0 {
		// A child is a relative path element (or, rarely, a relative path).
		if n.Name == "" || strings.HasPrefix(n.Name, "/") || strings.HasSuffix(n.Name, "/") {
			return fmt.Errorf("child node name %q is not a relative path", n.Name)
		}
		for _, el := range strings.Split(n.Name, "/") {
			if !validPathElement(el) {
				return fmt.Errorf("child node name %q is not a valid object path element", n.Name)
			}
		}
		if len(n.Interfaces) == 0 && len(n.Children) == 0 {
			// The usual form: <node name="child"/>.
			return nil
		}
	}
	if depth > 64 {
		return fmt.Errorf("nodes nested deeper than 64")
	}
	for _, i := range n.Interfaces {
		if !ValidInterface(i.Name) {
			return fmt.Errorf("invalid interface name %q", i.Name)
		}
		for _, m := range i.Methods {
			if !ValidMember(m.Name) {
				return fmt.Errorf("%s: invalid method name %q", i.Name, m.Name)
			}
			for _, a := range m.Args {
				if err := checkType(a.Type); err != nil {
					return fmt.Errorf("%s.%s: argument %q: %v", i.Name, m.Name, a.Name, err)
				}
				if a.Direction != "" && a.Direction != "in" && a.Direction != "out" {
					return fmt.Errorf("%s.%s: argument %q: direction %q", i.Name, m.Name, a.Name, a.Direction)
				}
			}
		}
		for _, s := range i.Signals {
			if !ValidMember(s.Name) {
				return fmt.Errorf("%s: invalid signal name %q", i.Name, s.Name)
			}
			for _, a := range s.Args {
				if err := checkType(a.Type); err != nil {
					return fmt.Errorf("%s.%s: argument %q: %v", i.Name, s.Name, a.Name, err)
				}
			}
		}
		for _, p := range i.Properties {
			if !ValidMember(p.Name) {
				return fmt.Errorf("%s: invalid property name %q", i.Name, p.Name)
			}
			if err := checkType(p.Type); err != nil {
				return fmt.Errorf("%s.%s: %v", i.Name, p.Name, err)
			}
			switch p.Access {
			case "read", "write", "readwrite":
			default:
				return fmt.Errorf("%s.%s: access %q (want read, write or readwrite)", i.Name, p.Name, p.Access)
			}
		}
	}
	for i := range n.Children {
		if err := n.Children[i].check(depth + 1); err != nil {
			return err
		}
	}
	return nil
}

// checkType accepts exactly one complete type.
func checkType(t string) error {
	s, err := dbus.ParseSignature(t)
	if err != nil || t == "" {
		return fmt.Errorf("invalid type signature %q", t)
	}
	_ = s
	// godbus accepts dict entries with container keys (a{vs}); the spec
	// does not.
	for i := 0; i+1 < len(t); i++ {
		if t[i] == '{' && !strings.ContainsRune("ybnqiuxtdsogh", rune(t[i+1])) {
			return fmt.Errorf("invalid type signature %q: a dict key must be a basic type", t)
		}
	}
	// Not s.Single(): in godbus v5.2.4 it reports the opposite.
	if n := completeTypes(t); n != 1 {
		return fmt.Errorf("type %q is %d complete types, want 1", t, n)
	}
	return nil
}

// completeTypes counts the complete types in a signature already known to
// be valid.
func completeTypes(sig string) int {
	n, depth := 0, 0
	for i := 0; i < len(sig); i++ {
		switch sig[i] {
		case 'a':
			continue // an array prefix belongs to the next type
		case '(', '{':
			depth++
			continue
		case ')', '}':
			depth--
		}
		if depth == 0 {
			n++
		}
	}
	return n
}

// ValidInterface follows the D-Bus spec: two or more dot-separated elements
// of [A-Za-z0-9_], not starting with a digit, at most 255 bytes. Bus names
// share the rule (plus '-'), see ValidBusName.
func ValidInterface(s string) bool {
	return validDotted(s, false)
}

// ValidBusName accepts well-known names (dotted, '-' allowed) and unique
// names (":1.42").
func ValidBusName(s string) bool {
	if strings.HasPrefix(s, ":") {
		if len(s) > 255 || len(s) < 2 {
			return false
		}
		for _, el := range strings.Split(s[1:], ".") {
			if el == "" {
				return false
			}
			for _, r := range el {
				if !(isAlnum(r) || r == '_' || r == '-') {
					return false
				}
			}
		}
		return strings.Contains(s, ".")
	}
	return validDotted(s, true)
}

func validDotted(s string, dash bool) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	els := strings.Split(s, ".")
	if len(els) < 2 {
		return false
	}
	for _, el := range els {
		if el == "" || (el[0] >= '0' && el[0] <= '9') {
			return false
		}
		for _, r := range el {
			if !(isAlnum(r) || r == '_' || (dash && r == '-')) {
				return false
			}
		}
	}
	return true
}

// ValidMember follows the D-Bus spec for method, signal and property names.
func ValidMember(s string) bool {
	if len(s) == 0 || len(s) > 255 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, r := range s {
		if !(isAlnum(r) || r == '_') {
			return false
		}
	}
	return true
}

func validPathElement(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(isAlnum(r) || r == '_') {
			return false
		}
	}
	return true
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// ChildPath joins a parent path and a child node name.
func ChildPath(parent dbus.ObjectPath, child string) dbus.ObjectPath {
	if parent == "/" {
		return dbus.ObjectPath("/" + child)
	}
	return dbus.ObjectPath(string(parent) + "/" + child)
}
