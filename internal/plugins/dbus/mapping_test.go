package dbus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShippedMappingsResolve(t *testing.T) {
	set, err := loadMappings("")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"timedate1": {"Timezone", "NTP", "LocalRTC"},
		"hostname1": {"StaticHostname", "Hostname", "PrettyHostname", "IconName", "Chassis", "Deployment", "Location"},
		"locale1":   {"Locale"},
	}
	n := 0
	for svc, props := range want {
		in := readIntrospection(t, svc+".xml")
		name := "org.freedesktop." + svc
		ii := in.Interfaces[name]
		for _, p := range props {
			pm := set.lookup(name, name, p)
			if pm == nil {
				t.Errorf("%s.%s: not mapped", svc, p)
				continue
			}
			pi := ii.Properties[p]
			if pi == nil || pi.Write {
				t.Errorf("%s.%s: not a read-only property: %+v", svc, p, pi)
				continue
			}
			m, lits, err := pm.resolve(ii, pi)
			if err != nil {
				t.Errorf("%s.%s: %v", svc, p, err)
				continue
			}
			args := pm.call(lits, "VALUE")
			if len(args) != len(m.In) || args[0] != "VALUE" {
				t.Errorf("%s.%s: args %v", svc, p, args)
			}
			for _, a := range args[1:] {
				if a != false {
					t.Errorf("%s.%s: literal %v, want false (interactive, fix_system)", svc, p, a)
				}
			}
			n++
		}
	}
	total := 0
	for _, props := range set.m {
		total += len(props)
	}
	if total != n {
		t.Errorf("%d shipped property mappings, %d checked", total, n)
	}
}

const goodMapping = `service: org.opdbus.Test1
interface: org.opdbus.Test1.Settings
properties:
  Mode: {method: SetMode, args: [$value, false]}
`

func writeMapping(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMappingFileErrors(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string // every part must appear in the error
	}{
		{"unknown-top.yaml", "servce: org.opdbus.Test1\ninterface: org.opdbus.Test1.Settings\nproperties: {Mode: {method: SetMode, args: [$value, false]}}\n",
			[]string{"unknown-top.yaml: servce: unknown field", "service: missing"}},
		{"unknown-prop-field.yaml", strings.Replace(goodMapping, "false]}", "false], service: org.freedesktop.systemd1}", 1),
			[]string{"unknown-prop-field.yaml: properties.Mode.service: unknown field"}},
		{"dotted.yaml", strings.Replace(goodMapping, "SetMode", "org.freedesktop.systemd1.Manager.PowerOff", 1),
			[]string{"dotted.yaml: properties.Mode.method:", "calls methods of its own interface org.opdbus.Test1.Settings only"}},
		{"bad-method.yaml", strings.Replace(goodMapping, "SetMode", "Set-Mode", 1),
			[]string{"bad-method.yaml: properties.Mode.method: \"Set-Mode\": member name has character '-'"}},
		{"no-value.yaml", strings.Replace(goodMapping, "$value", "normal", 1),
			[]string{"no-value.yaml: properties.Mode.args: must contain \"$value\" exactly once, found 0"}},
		{"two-values.yaml", strings.Replace(goodMapping, "false", "$value", 1),
			[]string{"properties.Mode.args: must contain \"$value\" exactly once, found 2"}},
		{"placeholder.yaml", strings.Replace(goodMapping, "false", "$current", 1),
			[]string{"properties.Mode.args[1]: unknown placeholder \"$current\""}},
		{"null.yaml", strings.Replace(goodMapping, "false", "null", 1),
			[]string{"properties.Mode.args[1]: line 4: null is not a D-Bus value"}},
		{"bad-service.yaml", strings.Replace(goodMapping, "org.opdbus.Test1\n", "org.opdbus.Test 1\n", 1),
			[]string{"bad-service.yaml: service: \"org.opdbus.Test 1\": bus name has character ' '"}},
		{"unique-service.yaml", strings.Replace(goodMapping, "org.opdbus.Test1\n", "\":1.42\"\n", 1),
			[]string{"service: \":1.42\": unique connection names"}},
		{"bad-iface.yaml", strings.Replace(goodMapping, "org.opdbus.Test1.Settings", "Settings", 1),
			[]string{"interface: \"Settings\": interface name needs at least two"}},
		{"bad-prop.yaml", strings.Replace(goodMapping, "Mode:", "Mo.de:", 1),
			[]string{`properties["Mo.de"]: not a property name`}},
		{"no-args.yaml", strings.Replace(goodMapping, ", args: [$value, false]", "", 1),
			[]string{"properties.Mode.args: missing"}},
		{"args-map.yaml", strings.Replace(goodMapping, "[$value, false]", "{a: 1}", 1),
			[]string{"properties.Mode.args: expected a list"}},
		{"no-props.yaml", "service: org.opdbus.Test1\ninterface: org.opdbus.Test1.Settings\n",
			[]string{"properties: missing"}},
		{"not-yaml.yaml", "service: [\n", []string{"not-yaml.yaml: invalid YAML"}},
		{"list.yaml", "- a\n", []string{"list.yaml: (top level): expected a map"}},
		{"empty.yaml", "", []string{"empty.yaml: empty"}},
		{"dup.yaml", goodMapping + "service: org.x.Y\n", []string{"dup.yaml: service: given twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeMapping(t, dir, c.name, c.body)
			_, err := loadMappings(dir)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error does not name the file %s:\n%v", p, err)
			}
		})
	}
}

func TestMappingDirectory(t *testing.T) {
	dir := t.TempDir()
	writeMapping(t, dir, "a.yaml", goodMapping)
	writeMapping(t, dir, "notes.txt", "not a mapping")
	writeMapping(t, dir, ".hidden.yaml", "garbage: [")
	// A user mapping replaces a shipped one.
	writeMapping(t, dir, "tz.yml", "service: org.freedesktop.timedate1\ninterface: org.freedesktop.timedate1\nproperties:\n  Timezone: {method: SetTimezone, args: [$value, true]}\n")
	set, err := loadMappings(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pm := set.lookup("org.opdbus.Test1", "org.opdbus.Test1.Settings", "Mode"); pm == nil || pm.Method != "SetMode" {
		t.Errorf("Mode: %+v", pm)
	}
	if pm := set.lookup("org.freedesktop.timedate1", "org.freedesktop.timedate1", "Timezone"); pm == nil || pm.Args[1].Lit != true {
		t.Errorf("user mapping did not replace the shipped one: %+v", pm)
	}
	if pm := set.lookup("org.freedesktop.timedate1", "org.freedesktop.timedate1", "NTP"); pm == nil {
		t.Errorf("shipped NTP mapping lost")
	}
	// A mapping for one service does not apply to another.
	if pm := set.lookup("org.evil.Test1", "org.opdbus.Test1.Settings", "Mode"); pm != nil {
		t.Errorf("mapping applied to another service")
	}

	// Two user files mapping the same property.
	p := writeMapping(t, dir, "b.yaml", goodMapping)
	if _, err := loadMappings(dir); err == nil || !strings.Contains(err.Error(), p+": properties.Mode: org.opdbus.Test1.Settings.Mode of org.opdbus.Test1 is already mapped by "+filepath.Join(dir, "a.yaml")) {
		t.Errorf("duplicate: %v", err)
	}
	os.Remove(p)

	// Permissions and bad directories.
	if err := os.Chmod(filepath.Join(dir, "a.yaml"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMappings(dir); err == nil || !strings.Contains(err.Error(), "a.yaml: writable by anyone") {
		t.Errorf("world-writable file: %v", err)
	}
	os.Chmod(filepath.Join(dir, "a.yaml"), 0o644)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMappings(dir); err == nil || !strings.Contains(err.Error(), "the directory is writable by anyone") {
		t.Errorf("world-writable dir: %v", err)
	}
	os.Chmod(dir, 0o755)
	if _, err := loadMappings(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), MappingsEnv+"=") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing dir: %v", err)
	}
	if _, err := loadMappings(filepath.Join(dir, "a.yaml")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file as dir: %v", err)
	}

	// The plugin reports a bad directory in Available and Validate.
	bad := t.TempDir()
	writeMapping(t, bad, "x.yaml", strings.Replace(goodMapping, "SetMode", "a.b.C", 1))
	pl := New(bad)
	if err := pl.Available(t.Context()); err == nil || !strings.Contains(err.Error(), MappingsEnv+"="+bad) || !strings.Contains(err.Error(), "x.yaml: properties.Mode.method") {
		t.Errorf("Available: %v", err)
	}
	if ps := pl.Validate(&State{}); len(ps) != 1 || !strings.Contains(ps[0].Msg, "x.yaml") {
		t.Errorf("Validate: %v", ps)
	}
}

const settingsXML = `<node>
 <interface name="org.opdbus.Test1.Settings">
  <method name="SetMode"><arg name="mode" type="s" direction="in"/><arg name="interactive" type="b" direction="in"/></method>
  <method name="Reset"/>
  <property name="Mode" type="s" access="read"/>
  <property name="Verbose" type="b" access="readwrite"/>
  <property name="Limit" type="u" access="readwrite"/>
  <property name="Count" type="u" access="read"/>
 </interface>
 <interface name="org.opdbus.Test1.Other">
  <method name="SetMode"><arg name="mode" type="s" direction="in"/><arg name="interactive" type="b" direction="in"/></method>
 </interface>
</node>`

// Against the service's introspection, a mapping must name a method of its
// own interface, with arguments that fit.
func TestMappingResolveErrors(t *testing.T) {
	in, err := parseIntrospection([]byte(settingsXML))
	if err != nil {
		t.Fatal(err)
	}
	ii := in.Interfaces["org.opdbus.Test1.Settings"]
	cases := []struct{ props, want string }{
		{"Mode: {method: SetModus, args: [$value, false]}", "x.yaml: properties.Mode.method: interface org.opdbus.Test1.Settings has no method SetModus (its methods: Reset, SetMode)"},
		{"Mode: {method: Reset, args: [$value, false]}", `x.yaml: properties.Mode.args: org.opdbus.Test1.Settings.Reset takes 0 arguments (signature ""), the mapping gives 2`},
		{"Mode: {method: SetMode, args: [$value]}", `SetMode takes 2 arguments (signature "sb"), the mapping gives 1`},
		{"Mode: {method: SetMode, args: [false, $value]}", "x.yaml: properties.Mode.args[1]: $value is argument 1 of org.opdbus.Test1.Settings.SetMode, of type b, but property Mode is of type s"},
		{"Mode: {method: SetMode, args: [$value, \"no\"]}", `x.yaml: properties.Mode.args[1]: expected signature b (boolean), got the string "no"`},
		{"Mode: {method: SetMode, args: [$value, 1]}", `properties.Mode.args[1]: expected signature b (boolean), got the number 1`},
	}
	for _, c := range cases {
		dir := t.TempDir()
		writeMapping(t, dir, "x.yaml", "service: org.opdbus.Test1\ninterface: org.opdbus.Test1.Settings\nproperties:\n  "+c.props+"\n")
		set, err := loadMappings(dir)
		if err != nil {
			t.Errorf("%s: load: %v", c.props, err)
			continue
		}
		pm := set.lookup("org.opdbus.Test1", "org.opdbus.Test1.Settings", "Mode")
		_, _, err = pm.resolve(ii, ii.Properties["Mode"])
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %s", c.props, err, c.want)
		}
	}
}
