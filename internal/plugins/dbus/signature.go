package dbus

import (
	"errors"
	"fmt"
)

// sigType is one complete D-Bus type, parsed from a signature.
type sigType struct {
	// code is the type code: y b n q i u x t d h s o g v, 'a' (array of
	// elem), 'm' (dict a{key val}), 'r' (struct of fields).
	code   byte
	elem   *sigType   // 'a'
	key    *sigType   // 'm'
	val    *sigType   // 'm'
	fields []*sigType // 'r'
	str    string     // the signature text of this type
}

func (t *sigType) String() string { return t.str }

// Limits from the D-Bus specification.
const (
	maxSigLen      = 255
	maxArrayDepth  = 32
	maxStructDepth = 32
)

func isBasic(c byte) bool {
	switch c {
	case 'y', 'b', 'n', 'q', 'i', 'u', 'x', 't', 'd', 'h', 's', 'o', 'g':
		return true
	}
	return false
}

// parseSignature parses exactly one complete type ("s", "a{sv}", "(ii)").
func parseSignature(s string) (*sigType, error) {
	ts, err := parseSignatures(s)
	if err != nil {
		return nil, err
	}
	if len(ts) != 1 {
		return nil, fmt.Errorf("signature %q is %d types, expected one complete type", s, len(ts))
	}
	return ts[0], nil
}

// parseSignatures parses a sequence of complete types (a method's in-args).
func parseSignatures(s string) ([]*sigType, error) {
	if len(s) > maxSigLen {
		return nil, fmt.Errorf("signature longer than %d bytes", maxSigLen)
	}
	p := &sigParser{s: s}
	var out []*sigType
	for p.i < len(s) {
		t, err := p.one(0, 0)
		if err != nil {
			return nil, fmt.Errorf("signature %q: %w", s, err)
		}
		out = append(out, t)
	}
	return out, nil
}

type sigParser struct {
	s string
	i int
}

func (p *sigParser) one(arrays, structs int) (*sigType, error) {
	if p.i >= len(p.s) {
		return nil, errors.New("ends in the middle of a type")
	}
	start := p.i
	c := p.s[p.i]
	p.i++
	t := &sigType{code: c}
	switch {
	case isBasic(c) || c == 'v':
	case c == 'a':
		if arrays+1 > maxArrayDepth {
			return nil, fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
		}
		if p.i < len(p.s) && p.s[p.i] == '{' {
			p.i++
			if p.i >= len(p.s) || !isBasic(p.s[p.i]) {
				return nil, errors.New("a dict key must be a basic type (not a container or variant)")
			}
			k, err := p.one(arrays+1, structs+1)
			if err != nil {
				return nil, err
			}
			if p.i < len(p.s) && p.s[p.i] == '}' {
				return nil, errors.New("a dict entry {..} holds exactly a key and a value")
			}
			v, err := p.one(arrays+1, structs+1)
			if err != nil {
				return nil, err
			}
			if p.i >= len(p.s) || p.s[p.i] != '}' {
				return nil, errors.New("a dict entry {..} holds exactly a key and a value")
			}
			p.i++
			t.code, t.key, t.val = 'm', k, v
		} else {
			e, err := p.one(arrays+1, structs)
			if err != nil {
				return nil, err
			}
			t.elem = e
		}
	case c == '(':
		if structs+1 > maxStructDepth {
			return nil, fmt.Errorf("structs nested deeper than %d", maxStructDepth)
		}
		t.code = 'r'
		for {
			if p.i >= len(p.s) {
				return nil, errors.New("unclosed '('")
			}
			if p.s[p.i] == ')' {
				p.i++
				break
			}
			f, err := p.one(arrays, structs+1)
			if err != nil {
				return nil, err
			}
			t.fields = append(t.fields, f)
		}
		if len(t.fields) == 0 {
			return nil, errors.New("empty struct \"()\"")
		}
	case c == '{':
		return nil, errors.New("a dict entry {..} may only appear as an array element (a{..})")
	default:
		return nil, fmt.Errorf("unknown type code %s", quoteByte(c))
	}
	t.str = p.s[start:p.i]
	return t, nil
}

// describeSig says in words what a signature expects, for error messages.
func describeSig(t *sigType) string {
	switch t.code {
	case 'y':
		return "byte, 0..255"
	case 'b':
		return "boolean"
	case 'n':
		return "int16"
	case 'q':
		return "uint16"
	case 'i':
		return "int32"
	case 'u':
		return "uint32"
	case 'x':
		return "int64"
	case 't':
		return "uint64"
	case 'd':
		return "double"
	case 'h':
		return "unix fd"
	case 's':
		return "string"
	case 'o':
		return "object path"
	case 'g':
		return "signature"
	case 'v':
		return "variant"
	case 'a':
		return "array of " + t.elem.str
	case 'm':
		return "dict of " + t.key.str + " to " + t.val.str
	case 'r':
		return "struct, a list of " + fmt.Sprint(len(t.fields)) + " fields"
	}
	return t.str
}
