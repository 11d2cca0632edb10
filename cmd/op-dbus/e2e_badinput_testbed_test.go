package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every bad document is refused with exit 1 and a one-line error naming the
// problem, and nothing is changed: the oracle still sees the unit running.
func TestTestbedBadInputChangesNothing(t *testing.T) {
	m, env := userBed(t, "keep.service")
	if o, err := m.Systemctl(context.Background(), "start", "keep.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	dir := t.TempDir()
	stop := `"keep.service": {"active_state": "inactive"}`
	big := filepath.Join(dir, "big.json")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	// 50 MB: a valid document start followed by padding.
	if _, err := f.WriteString(`{"version":1,"plugins":{"systemd":{"units":{` + stop + `}}},"x":"`); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(50 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cases := []struct {
		name, file, want string
	}{
		{"malformed json", writeFile(t, dir, "a.json", `{"version":1,"plugins":{"systemd":{"units":{`+stop+`}}`), "invalid JSON"},
		{"malformed yaml", writeFile(t, dir, "b.yaml", "version: 1\nplugins:\n  systemd:\n    units:\n      keep.service: {active_state: inactive\n"), "invalid YAML"},
		{"unknown plugin", writeFile(t, dir, "c.json", `{"version":1,"plugins":{"systemd":{"units":{`+stop+`}},"sysctl":{}}}`), "plugins.sysctl: unknown plugin"},
		{"unknown field", writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"keep.service":{"active_state":"inactive","enabeld":true}}}}}`), `plugins.systemd.units["keep.service"].enabeld: unknown field`},
		{"wrong type", writeFile(t, dir, "e.json", `{"version":1,"plugins":{"systemd":{"units":{"keep.service":{"active_state":false}}}}}`), `plugins.systemd.units["keep.service"].active_state: expected a string, got the boolean false`},
		{"path separator in unit", writeFile(t, dir, "f.json", `{"version":1,"plugins":{"systemd":{"units":{`+stop+`,"x/y.service":{"active_state":"active"}}}}}`), `units["x/y.service"]: invalid unit name`},
		{"space in unit", writeFile(t, dir, "g.json", `{"version":1,"plugins":{"systemd":{"units":{`+stop+`,"x y.service":{"active_state":"active"}}}}}`), `units["x y.service"]: invalid unit name: contains a space`},
		{"missing version", writeFile(t, dir, "h.json", `{"plugins":{"systemd":{"units":{`+stop+`}}}}`), "version: missing"},
		{"50 MB", big, "larger than the 16 MiB limit"},
		{"empty", writeFile(t, dir, "i.json", ""), "empty document"},
		{"non-UTF-8", writeFile(t, dir, "j.json", "{\"version\":1,\"plugins\":{\"systemd\":{\"units\":{\"keep.service\":{\"active_state\":\"inactive\"}}},\"hostname\":{\"location\":\"\xc3\x28\"}}}"), "not valid UTF-8"},
		{"directory", dir, "is a directory"},
		{"missing file", filepath.Join(dir, "nope.json"), "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range []string{"apply", "diff", "verify", "validate"} {
				args := []string{"--user", "--state-dir=" + dir + "/state", cmd, tc.file}
				if cmd == "apply" {
					args = append(args, "--yes")
				}
				r := run(t, env, "", args...)
				wantCode(t, r, 1, cmd+" "+tc.name)
				if cmd != "validate" {
					lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
					if len(lines) != 1 {
						t.Errorf("%s: error is not one line:\n%s", cmd, r.stderr)
					}
				}
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("%s: error does not name the problem %q:\n%s", cmd, tc.want, r.stderr)
				}
				if r.stdout != "" && cmd != "validate" {
					t.Errorf("%s printed to stdout on bad input: %s", cmd, r.stdout)
				}
			}
			if got := oracle(t, m, "is-active", "keep.service"); got != "active" {
				t.Fatalf("bad input changed the host: keep.service is %s", got)
			}
		})
	}
}
