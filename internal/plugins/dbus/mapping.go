package dbus

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// A mapping tells how to set read-only properties of one interface of one
// service, through a setter method of that same interface:
//
//	service: org.freedesktop.timedate1
//	interface: org.freedesktop.timedate1
//	properties:
//	  NTP: {method: SetNTP, args: [$value, false]}
//
// The method is always called on the service and interface the mapping
// declares, on the object the state document names: a mapping cannot
// point at another service or interface, and a state document can never
// name a method. Arguments are a template: "$value" is the desired value,
// anything else a literal; both are checked against the method's
// in-signature from introspection before any call.

// MappingsEnv names a directory of extra mapping files (*.yaml, *.yml).
const MappingsEnv = "OPDBUS_DBUS_MAPPINGS"

// maxMappingSize bounds one mapping file.
const maxMappingSize = 1 << 20

//go:embed mappings/*.yaml
var shipped embed.FS

type mapping struct {
	File       string
	Service    string
	Interface  string
	Properties map[string]*propMapping
}

type propMapping struct {
	File     string // where it was declared, for messages
	Property string
	Method   string
	Args     []argTemplate
}

type argTemplate struct {
	Value bool // "$value"
	Lit   any  // JSON tree of a literal
}

// where names a field of the mapping in messages: `file: properties.NTP.method`.
func (pm *propMapping) where(field string) string {
	return fmt.Sprintf("mapping %s: properties.%s%s", pm.File, pm.Property, field)
}

type mapKey struct{ service, iface string }

// mappingSet is every loaded mapping by service and interface.
type mappingSet struct {
	m map[mapKey]map[string]*propMapping
}

func (s *mappingSet) lookup(service, iface, prop string) *propMapping {
	if s == nil {
		return nil
	}
	return s.m[mapKey{service, iface}][prop]
}

// loadMappings reads the shipped mappings and, if dir is not empty, the
// user's. A user mapping of a property replaces the shipped one; two user
// files mapping the same property is an error.
func loadMappings(dir string) (*mappingSet, error) {
	set := &mappingSet{m: map[mapKey]map[string]*propMapping{}}
	var errs []error
	ents, err := fs.ReadDir(shipped, "mappings")
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		b, err := shipped.ReadFile("mappings/" + e.Name())
		if err != nil {
			return nil, err
		}
		mp, err := parseMapping("shipped:"+e.Name(), b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, set.add(mp, false)...)
	}
	if dir != "" {
		files, err := mappingFiles(dir)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			b, err := readMappingFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			mp, err := parseMapping(f, b)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, set.add(mp, true)...)
		}
	}
	if len(errs) > 0 {
		return nil, joinErrs(errs)
	}
	return set, nil
}

func (s *mappingSet) add(mp *mapping, user bool) []error {
	k := mapKey{mp.Service, mp.Interface}
	props := s.m[k]
	if props == nil {
		props = map[string]*propMapping{}
		s.m[k] = props
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(mp.Properties)) {
		pm := mp.Properties[name]
		if old, ok := props[name]; ok && (!user || !strings.HasPrefix(old.File, "shipped:")) {
			errs = append(errs, fmt.Errorf("%s: %s.%s of %s is already mapped by %s", pm.where(""), mp.Interface, name, mp.Service, old.File))
			continue
		}
		props[name] = pm
	}
	return errs
}

// mappingFiles lists the *.yaml and *.yml files of dir, refusing a
// directory anyone may write to (mappings decide which methods are called).
func mappingFiles(dir string) ([]string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", MappingsEnv, dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s=%s: not a directory", MappingsEnv, dir)
	}
	if fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return nil, fmt.Errorf("%s=%s: the directory is writable by anyone; mappings decide which D-Bus methods op-dbus calls (chmod o-w it)", MappingsEnv, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", MappingsEnv, dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || e.IsDir() {
			continue
		}
		if ext := filepath.Ext(n); ext == ".yaml" || ext == ".yml" {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

func readMappingFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("mapping %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, fmt.Errorf("mapping %s: writable by anyone; mappings decide which D-Bus methods op-dbus calls (chmod o-w it)", path)
	}
	if fi.Size() > maxMappingSize {
		return nil, fmt.Errorf("mapping %s: larger than %d KiB", path, maxMappingSize>>10)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return b, nil
}

// parseMapping decodes and checks one mapping file. Every problem names
// the file and the field: `m.yaml: properties.NTP.method: ...`.
func parseMapping(file string, data []byte) (*mapping, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("mapping %s: invalid YAML: %v", file, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("mapping %s: empty (expected service, interface and properties)", file)
	}
	var errs []error
	problem := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("mapping %s: %s: %s", file, path, fmt.Sprintf(format, args...)))
	}
	root := doc.Content[0]
	fields, ok := yamlFields(root, "", []string{"service", "interface", "properties"}, problem)
	if !ok {
		return nil, joinErrs(errs)
	}
	mp := &mapping{File: file, Properties: map[string]*propMapping{}}
	for _, f := range []struct {
		name  string
		dst   *string
		check func(string) error
	}{{"service", &mp.Service, ValidBusName}, {"interface", &mp.Interface, ValidInterfaceName}} {
		n := fields[f.name]
		if n == nil {
			problem(f.name, "missing")
			continue
		}
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			problem(f.name, "expected a string (line %d)", n.Line)
			continue
		}
		if err := f.check(n.Value); err != nil {
			problem(f.name, "%q: %v", n.Value, err)
			continue
		}
		*f.dst = n.Value
	}
	props := fields["properties"]
	if props == nil {
		problem("properties", "missing (map property names to {method, args})")
		return nil, joinErrs(errs)
	}
	if props.Kind != yaml.MappingNode {
		problem("properties", "expected a map of property names to {method, args} (line %d)", props.Line)
		return nil, joinErrs(errs)
	}
	if len(props.Content) == 0 {
		problem("properties", "empty")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(props.Content); i += 2 {
		kn, vn := props.Content[i], props.Content[i+1]
		name := kn.Value
		path := "properties." + name
		if err := ValidMemberName(name); err != nil || kn.Kind != yaml.ScalarNode {
			problem(fmt.Sprintf("properties[%q]", name), "not a property name: %v", err)
			continue
		}
		if seen[name] {
			problem(path, "mapped twice (line %d)", kn.Line)
			continue
		}
		seen[name] = true
		pf, ok := yamlFields(vn, path, []string{"method", "args"}, problem)
		if !ok {
			continue
		}
		pm := &propMapping{File: file, Property: name}
		if m := pf["method"]; m == nil {
			problem(path+".method", "missing")
		} else if m.Kind != yaml.ScalarNode || m.Tag != "!!str" {
			problem(path+".method", "expected a method name (line %d)", m.Line)
		} else if strings.Contains(m.Value, ".") && mp.Interface != "" {
			problem(path+".method", "%q: a mapping calls methods of its own interface %s only; write the bare method name, a mapping for another interface goes in its own file", m.Value, mp.Interface)
		} else if err := ValidMemberName(m.Value); err != nil {
			problem(path+".method", "%q: %v", m.Value, err)
		} else {
			pm.Method = m.Value
		}
		a := pf["args"]
		if a == nil {
			problem(path+".args", "missing (a list with \"$value\" where the desired value goes, e.g. [$value, false])")
		} else if a.Kind != yaml.SequenceNode {
			problem(path+".args", "expected a list (line %d)", a.Line)
		} else {
			values := 0
			for j, an := range a.Content {
				ap := fmt.Sprintf("%s.args[%d]", path, j)
				if an.Kind == yaml.ScalarNode && an.Tag == "!!str" && strings.HasPrefix(an.Value, "$") {
					if an.Value != "$value" {
						problem(ap, "unknown placeholder %q (the only one is $value)", an.Value)
						continue
					}
					values++
					pm.Args = append(pm.Args, argTemplate{Value: true})
					continue
				}
				lit, err := yamlToJSON(an, 0)
				if err != nil {
					problem(ap, "%v", err)
					continue
				}
				pm.Args = append(pm.Args, argTemplate{Lit: lit})
			}
			if values != 1 {
				problem(path+".args", "must contain \"$value\" exactly once, found %d", values)
			}
		}
		mp.Properties[name] = pm
	}
	if len(errs) > 0 {
		return nil, joinErrs(errs)
	}
	return mp, nil
}

// yamlFields reads a YAML map with known keys, reporting unknown and
// duplicate keys.
func yamlFields(n *yaml.Node, path string, known []string, problem func(string, string, ...any)) (map[string]*yaml.Node, bool) {
	where := path
	if where == "" {
		where = "(top level)"
	}
	if n.Kind != yaml.MappingNode {
		problem(where, "expected a map with %s (line %d)", strings.Join(known, ", "), n.Line)
		return nil, false
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		fp := k
		if path != "" {
			fp = path + "." + k
		}
		if !contains(known, k) {
			problem(fp, "unknown field (line %d; known: %s)", n.Content[i].Line, strings.Join(known, ", "))
			continue
		}
		if _, dup := out[k]; dup {
			problem(fp, "given twice (line %d)", n.Content[i].Line)
			continue
		}
		out[k] = n.Content[i+1]
	}
	return out, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// yamlToJSON turns a YAML literal into a JSON tree (json.Number numbers).
func yamlToJSON(n *yaml.Node, depth int) (any, error) {
	if depth > maxValueDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxValueDepth)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return nil, fmt.Errorf("line %d: YAML aliases are not allowed in mappings", n.Line)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlToJSON(c, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := yamlToJSON(n.Content[i+1], depth+1)
			if err != nil {
				return nil, err
			}
			out[n.Content[i].Value] = v
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %v", n.Line, err)
			}
			return b, nil
		case "!!int", "!!float":
			var f any
			if err := n.Decode(&f); err != nil {
				return nil, fmt.Errorf("line %d: %v", n.Line, err)
			}
			b, err := json.Marshal(f)
			if err != nil {
				return nil, fmt.Errorf("line %d: number %s cannot be used", n.Line, n.Value)
			}
			return json.Number(b), nil
		case "!!str":
			return n.Value, nil
		case "!!null":
			return nil, fmt.Errorf("line %d: null is not a D-Bus value", n.Line)
		}
		return nil, fmt.Errorf("line %d: unsupported YAML type %s", n.Line, n.Tag)
	}
	return nil, fmt.Errorf("line %d: unsupported YAML value", n.Line)
}

// resolve checks a property mapping against the service's introspection:
// the method exists on the mapping's interface, takes as many arguments as
// the template gives, "$value" sits where the property's type is expected,
// and every literal converts to its argument's type. It returns the method
// and the literal arguments converted.
func (pm *propMapping) resolve(ii *ifaceInfo, prop *propInfo) (*methodInfo, []any, error) {
	m := ii.Methods[pm.Method]
	if m == nil {
		if why, ok := ii.Invalid[pm.Method]; ok {
			return nil, nil, fmt.Errorf("%s: the service declares %s.%s unusably (%s)", pm.where(".method"), ii.Name, pm.Method, why)
		}
		return nil, nil, fmt.Errorf("%s: interface %s has no method %s (its methods: %s)", pm.where(".method"), ii.Name, pm.Method, names(ii.Methods))
	}
	if len(m.In) != len(pm.Args) {
		return nil, nil, fmt.Errorf("%s: %s.%s takes %d arguments (signature %q), the mapping gives %d", pm.where(".args"), ii.Name, pm.Method, len(m.In), m.InSignature(), len(pm.Args))
	}
	for i, a := range pm.Args {
		if at := m.In[i]; a.Value && at.str != prop.Type.str {
			return nil, nil, fmt.Errorf("%s: $value is argument %d of %s.%s, of type %s, but property %s is of type %s", pm.where(fmt.Sprintf(".args[%d]", i)), i, ii.Name, pm.Method, at.str, prop.Name, prop.Type.str)
		}
	}
	args := make([]any, len(pm.Args))
	for i, a := range pm.Args {
		if a.Value {
			continue
		}
		v, err := fromJSON(m.In[i], a.Lit, fmt.Sprintf("%s.args[%d]", pm.where(""), i), 0)
		if err != nil {
			return nil, nil, err
		}
		args[i] = v.Interface()
	}
	return m, args, nil
}

// call builds the method's arguments: the converted literals with value in
// the "$value" slot.
func (pm *propMapping) call(lits []any, value any) []any {
	out := make([]any, len(pm.Args))
	for i, a := range pm.Args {
		if a.Value {
			out[i] = value
		} else {
			out[i] = lits[i]
		}
	}
	return out
}

// joinErrs joins errors into one, one per line.
func joinErrs(errs []error) error {
	var kept []error
	for _, e := range errs {
		if e != nil {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return errors.Join(kept...)
}
