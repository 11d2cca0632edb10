package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/op-dbus/op-dbus/internal/strictjson"
)

// maxDepth bounds nesting so a hostile document cannot exhaust the stack.
const maxDepth = 64

// parseJSON builds a generic tree (map[string]any, []any, json.Number,
// string, bool, nil) with internal/strictjson, the decoder every request
// body shares, which rejects duplicate keys and trailing data that
// encoding/json would silently accept. The error wraps the
// *strictjson.Error, for callers that switch on its kind.
func parseJSON(data []byte) (any, error) {
	var v any
	err := strictjson.Options{MaxDepth: maxDepth, UseNumber: true}.Decode(data, &v)
	if err == nil {
		return v, nil
	}
	var se *strictjson.Error
	if !errors.As(err, &se) {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	switch se.Kind {
	case strictjson.Duplicate, strictjson.Depth:
		return nil, jsonError{pathError{se.Path, se.Msg}.Error(), se}
	case strictjson.Trailing:
		return nil, jsonError{fmt.Sprintf("invalid JSON: unexpected data after the document at byte %d", trailingOffset(data, se.Offset)), se}
	case strictjson.Syntax:
		if se.Err == nil {
			return nil, jsonError{"invalid JSON: " + se.Msg, se}
		}
		if errors.Is(se.Err, io.EOF) || errors.Is(se.Err, io.ErrUnexpectedEOF) {
			return nil, jsonError{"invalid JSON: unexpected end of input", se}
		}
		line, col := lineCol(data, int(se.Offset))
		return nil, jsonError{fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(se.Err.Error(), "json: ")), se}
	}
	return nil, jsonError{"invalid JSON: " + se.Error(), se}
}

// trailingOffset is where this parser has always said trailing data is:
// the end of its first token (start is where it begins).
func trailingOffset(data []byte, start int64) int64 {
	dec := json.NewDecoder(bytes.NewReader(data[start:]))
	_, _ = dec.Token()
	return start + dec.InputOffset()
}

// jsonError is the message this parser has always given, wrapping the
// *strictjson.Error.
type jsonError struct {
	msg string
	err *strictjson.Error
}

func (e jsonError) Error() string { return e.msg }
func (e jsonError) Unwrap() error { return e.err }

type pathError struct{ path, msg string }

func (e pathError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return e.path + ": " + e.msg
}

func lineCol(data []byte, off int) (int, int) {
	if off > len(data) {
		off = len(data)
	}
	line := 1 + bytes.Count(data[:off], []byte{'\n'})
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// parseYAML builds the same generic tree from YAML, with YAML's own type
// resolution for scalars and string keys only.
func parseYAML(data []byte) (any, error) {
	var n yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("empty document")
		}
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("invalid YAML: more than one document in the file (line %d); give one state document", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	return yamlValue(&n, "", 0)
}

func yamlValue(n *yaml.Node, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, pathError{path, fmt.Sprintf("nested deeper than %d levels", maxDepth)}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return yamlValue(n.Content[0], path, depth)
	case yaml.AliasNode:
		return nil, pathError{path, fmt.Sprintf("line %d: YAML aliases are not allowed in state documents; write the value out", n.Line)}
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind != yaml.ScalarNode || (kn.Tag != "!!str" && kn.Tag != "!!int" && kn.Tag != "!!bool" && kn.Tag != "!!float") {
				return nil, pathError{path, fmt.Sprintf("line %d: object keys must be plain strings", kn.Line)}
			}
			if kn.Value == "<<" {
				return nil, pathError{path, fmt.Sprintf("line %d: YAML merge keys are not allowed in state documents", kn.Line)}
			}
			k := kn.Value
			kp := strictjson.Join(path, k)
			if _, dup := m[k]; dup {
				return nil, pathError{kp, fmt.Sprintf("line %d: duplicate key", kn.Line)}
			}
			v, err := yamlValue(vn, kp, depth+1)
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
		return m, nil
	case yaml.SequenceNode:
		a := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := yamlValue(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		return a, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, pathError{path, fmt.Sprintf("line %d: %v", n.Line, err)}
			}
			return b, nil
		case "!!int", "!!float":
			var f any
			if err := n.Decode(&f); err != nil {
				return nil, pathError{path, fmt.Sprintf("line %d: %v", n.Line, err)}
			}
			b, err := json.Marshal(f)
			if err != nil {
				return nil, pathError{path, fmt.Sprintf("line %d: number %s cannot be represented", n.Line, n.Value)}
			}
			return json.Number(b), nil
		case "!!str", "":
			return n.Value, nil
		default:
			return nil, pathError{path, fmt.Sprintf("line %d: unsupported YAML type %s", n.Line, n.Tag)}
		}
	}
	return nil, pathError{path, "unsupported YAML node"}
}
