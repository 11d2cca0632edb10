package dbus

import (
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// What op-dbus needs from an object's introspection XML: for each
// interface, its properties (signature, access) and its methods (in-args).
// Entries with invalid names or signatures are kept out (and remembered, so
// an error can say why a property is missing) rather than failing the
// whole object.

// maxIntrospectSize bounds the XML we parse; real objects are kilobytes.
const maxIntrospectSize = 4 << 20

type introspection struct {
	Interfaces map[string]*ifaceInfo
}

type ifaceInfo struct {
	Name       string
	Properties map[string]*propInfo
	Methods    map[string]*methodInfo
	// Invalid maps a member name to why it was left out.
	Invalid map[string]string
}

type propInfo struct {
	Name        string
	Type        *sigType
	Read, Write bool
}

type methodInfo struct {
	Name string
	In   []*sigType
}

// InSignature is the concatenated in-signature ("bb").
func (m *methodInfo) InSignature() string {
	var b strings.Builder
	for _, t := range m.In {
		b.WriteString(t.str)
	}
	return b.String()
}

type xmlNode struct {
	XMLName    xml.Name       `xml:"node"`
	Interfaces []xmlInterface `xml:"interface"`
}

type xmlInterface struct {
	Name       string        `xml:"name,attr"`
	Methods    []xmlMethod   `xml:"method"`
	Properties []xmlProperty `xml:"property"`
}

type xmlMethod struct {
	Name string   `xml:"name,attr"`
	Args []xmlArg `xml:"arg"`
}

type xmlArg struct {
	Name      string `xml:"name,attr"`
	Type      string `xml:"type,attr"`
	Direction string `xml:"direction,attr"`
}

type xmlProperty struct {
	Name   string `xml:"name,attr"`
	Type   string `xml:"type,attr"`
	Access string `xml:"access,attr"`
}

// parseIntrospection parses the reply of org.freedesktop.DBus.Introspectable.Introspect.
func parseIntrospection(data []byte) (*introspection, error) {
	if len(data) > maxIntrospectSize {
		return nil, fmt.Errorf("introspection XML is %d bytes, more than the %d MiB limit", len(data), maxIntrospectSize>>20)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil, errors.New("empty introspection XML")
	}
	var n xmlNode
	if err := xml.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("invalid introspection XML: %w", err)
	}
	out := &introspection{Interfaces: map[string]*ifaceInfo{}}
	for _, xi := range n.Interfaces {
		if ValidInterfaceName(xi.Name) != nil {
			continue
		}
		if _, dup := out.Interfaces[xi.Name]; dup {
			continue // first declaration wins
		}
		ii := &ifaceInfo{
			Name:       xi.Name,
			Properties: map[string]*propInfo{},
			Methods:    map[string]*methodInfo{},
			Invalid:    map[string]string{},
		}
		for _, xp := range xi.Properties {
			if ValidMemberName(xp.Name) != nil {
				continue
			}
			if _, dup := ii.Properties[xp.Name]; dup {
				continue
			}
			t, err := parseSignature(xp.Type)
			if err != nil {
				ii.Invalid[xp.Name] = "its type: " + err.Error()
				continue
			}
			p := &propInfo{Name: xp.Name, Type: t}
			switch xp.Access {
			case "read":
				p.Read = true
			case "write":
				p.Write = true
			case "readwrite":
				p.Read, p.Write = true, true
			default:
				ii.Invalid[xp.Name] = fmt.Sprintf("unknown access %q", xp.Access)
				continue
			}
			ii.Properties[xp.Name] = p
		}
	methods:
		for _, xm := range xi.Methods {
			if ValidMemberName(xm.Name) != nil {
				continue
			}
			if _, dup := ii.Methods[xm.Name]; dup {
				continue
			}
			m := &methodInfo{Name: xm.Name}
			for _, a := range xm.Args {
				switch a.Direction {
				case "", "in":
				case "out":
					continue
				default:
					ii.Invalid[xm.Name] = fmt.Sprintf("argument %q has direction %q", a.Name, a.Direction)
					continue methods
				}
				t, err := parseSignature(a.Type)
				if err != nil {
					ii.Invalid[xm.Name] = fmt.Sprintf("argument %q: %v", a.Name, err)
					continue methods
				}
				m.In = append(m.In, t)
			}
			ii.Methods[xm.Name] = m
		}
		out.Interfaces[xi.Name] = ii
	}
	return out, nil
}

// names lists the keys of a map, sorted, for messages.
func names[V any](m map[string]V) string {
	ks := slices.Sorted(maps.Keys(m))
	if len(ks) == 0 {
		return "none"
	}
	if len(ks) > 12 {
		return strings.Join(ks[:12], ", ") + fmt.Sprintf(" and %d more", len(ks)-12)
	}
	return strings.Join(ks, ", ")
}
