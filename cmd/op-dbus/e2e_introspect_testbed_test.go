package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestTestbedIntrospectCLI(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	r := run(t, env, "", "introspect", "--activatable", "--service", "org.freedesktop.hostname1", "-o", "json")
	wantCode(t, r, 0, "introspect -o json")
	before := writeFile(t, dir, "before.json", r.stdout)
	var res struct {
		Services []struct {
			Name    string `json:"name"`
			Objects []struct {
				Path string `json:"path"`
			} `json:"objects"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Services) != 1 || len(res.Services[0].Objects) < 2 {
		t.Fatalf("introspect output: %v\n%s", err, r)
	}
	r = run(t, env, "", "introspect", "--activatable", "--service", "org.freedesktop.hostname1", "-o", "paths")
	wantCode(t, r, 0, "paths")
	if !strings.Contains(r.stdout, "org.freedesktop.hostname1 /org/freedesktop/hostname1\n") {
		t.Errorf("paths output:\n%s", r.stdout)
	}
	r = run(t, env, "", "introspect", "--activatable", "--service", "org.freedesktop.hostname1")
	wantCode(t, r, 0, "tree")
	if !strings.Contains(r.stdout, ".SetStaticHostname(s, b) method") {
		t.Errorf("tree output lacks a method:\n%s", r.stdout)
	}

	// Change a property out of band; compare names exactly that.
	if out, err := b.Busctl(t.Context(), "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1", "org.freedesktop.hostname1", "SetLocation", "sb", "moved", "false"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	r = run(t, env, "", "introspect", "--activatable", "--service", "org.freedesktop.hostname1", "-o", "json")
	after := writeFile(t, dir, "after.json", r.stdout)
	r = run(t, env, "", "introspect", "--compare", before, after)
	wantCode(t, r, 2, "compare")
	if !strings.Contains(r.stdout, `~ org.freedesktop.hostname1 /org/freedesktop/hostname1 org.freedesktop.hostname1.Location: value: "" → "moved"`) {
		t.Errorf("compare output:\n%s", r.stdout)
	}
	r = run(t, env, "", "introspect", "--compare", before, before)
	wantCode(t, r, 0, "compare same")

	// Bad input: each a clear one-line error.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"introspect", "--bus", "unix:path=" + filepath.Join(dir, "nothing")}, "no such file or directory (nothing listens at that address)"},
		{[]string{"introspect", "--bus", "bogus"}, `bus "bogus": expected system, session or a D-Bus address`},
		{[]string{"introspect", "--service", "not a name"}, `--service "not a name" is not a valid bus name`},
		{[]string{"introspect", "--compare", before}, "--compare takes two files"},
		{[]string{"introspect", "--compare", before, writeFile(t, dir, "x.json", `{"nope": 1}`)}, "not an op-dbus introspection"},
	} {
		r := run(t, env, "", tc.args...)
		wantCode(t, r, 1, strings.Join(tc.args, " "))
		if !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%v: stderr %q, want one line containing %q", tc.args, r.stderr, tc.want)
		}
	}
}
