package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// nixEvalJSON evaluates a Nix file to JSON; skips (fails in CI) without nix.
func nixEvalJSON(t *testing.T, path string) []byte {
	t.Helper()
	nix := testbed.Program(t, "nix-instantiate", "nix-bin")
	for _, f := range []string{"flake.nix", "host.nix", "network.nix", "services.nix", "op-dbus-state.nix"} {
		if out, err := exec.Command(nix, "--parse", filepath.Join(filepath.Dir(path), f)).CombinedOutput(); err != nil {
			t.Fatalf("%s does not parse: %v\n%s", f, err, out)
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(nix, "--eval", "--strict", "--json", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval %s: %v\n%s", path, err, stderr.String())
	}
	return out
}

func canonicalJSON(t *testing.T, b []byte, drop ...string) string {
	t.Helper()
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	for _, k := range drop {
		delete(v, k)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestTestbedNixosGenerateRoundTrip(t *testing.T) {
	_, ienv := identityBed(t)
	m, uenv := userBedTB(t)
	env := append(ienv, uenv...)
	unit := "[Unit]\nDescription=admin app \"quoted\" 100%%\n[Service]\nUser=root\nRestart=on-failure\nEnvironment=\"GREETING=hello ${NAME}\" MODE=x\nExecStart=/bin/sleep \"1000 \" infinity\n[Install]\nWantedBy=default.target\n"
	if err := m.WriteUnit("adminapp.service", unit); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if out, err := m.Systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatalf("daemon-reload: %v %s", err, out)
	}
	if out, err := m.Systemctl(ctx, "enable", "adminapp.service"); err != nil {
		t.Fatalf("enable: %v %s", err, out)
	}
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{"static_hostname":"nixbed","pretty_hostname":"Bed \"one\" ${HOME} \\ back$${x}"},
		"timedate":{"timezone":"Europe/Berlin"}}}`)
	wantCode(t, run(t, env, "", sd, "apply", "--yes", doc), 0, "apply identity")

	out := filepath.Join(dir, "nixos")
	r := run(t, env, "", "--user", sd, "nixos", "generate", "--out", out)
	wantCode(t, r, 0, "nixos generate")
	read := func(n string) string {
		b, err := os.ReadFile(filepath.Join(out, n))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	host := read("host.nix")
	for _, w := range []string{`networking.hostName = "nixbed";`, `time.timeZone = "Europe/Berlin";`} {
		if !strings.Contains(host, w) {
			t.Errorf("host.nix lacks %s:\n%s", w, host)
		}
	}
	svc := read("services.nix")
	for _, w := range []string{`systemd.services.adminapp = {`, `description = "admin app \"quoted\" 100%%";`,
		`ExecStart = "/bin/sleep \"1000 \" infinity";`, `GREETING = "hello \${NAME}";`, `Restart = "on-failure";`,
		`User = "root";`, `wantedBy = [ "default.target" ];`} {
		if !strings.Contains(svc, w) {
			t.Errorf("services.nix lacks %s:\n%s", w, svc)
		}
	}
	if !strings.Contains(read("REPORT.md"), "adminapp.service") {
		t.Error("REPORT.md does not mention adminapp.service")
	}

	// Round trip: the evaluated state is a valid document that plans
	// nothing on the bed it came from.
	got := nixEvalJSON(t, filepath.Join(out, "op-dbus-state.nix"))
	evald := writeFile(t, dir, "evaluated.json", string(got))
	wantCode(t, run(t, env, "", "--user", sd, "diff", evald), 0, "diff of the evaluated state")
	if !strings.Contains(string(got), `"pretty_hostname":"Bed \"one\" ${HOME} \\ back$${x}"`) {
		t.Errorf("awkward pretty hostname lost: %s", got)
	}

	// Byte for byte over a saved query, through --from.
	q := run(t, env, "", "--user", sd, "query")
	wantCode(t, q, 0, "query")
	saved := writeFile(t, dir, "now.json", q.stdout)
	out2 := filepath.Join(dir, "nixos2")
	wantCode(t, run(t, env, "", "--user", sd, "nixos", "generate", "--from", saved, "--out", out2), 0, "generate --from")
	again := nixEvalJSON(t, filepath.Join(out2, "op-dbus-state.nix"))
	if a, b := canonicalJSON(t, again), canonicalJSON(t, []byte(q.stdout), "errors", "unavailable"); a != b {
		t.Fatalf("op-dbus-state.nix evaluates to\n%s\nthe query was\n%s", a, b)
	}
	// Same state, same bytes.
	out3 := filepath.Join(dir, "nixos3")
	wantCode(t, run(t, env, "", "--user", sd, "nixos", "generate", "--from", saved, "--out", out3), 0, "generate again")
	for _, n := range []string{"flake.nix", "host.nix", "network.nix", "services.nix", "op-dbus-state.nix", "REPORT.md"} {
		a, _ := os.ReadFile(filepath.Join(out2, n))
		b, _ := os.ReadFile(filepath.Join(out3, n))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs over the same state", n)
		}
	}

	// A directory with other files is refused, and left alone.
	writeFile(t, out, "mine.txt", "keep")
	r = run(t, env, "", "--user", sd, "nixos", "generate", "--from", saved, "--out", out)
	wantCode(t, r, 1, "generate into a directory with other files")
	if !strings.Contains(r.stderr, "--force") {
		t.Errorf("refusal does not name --force: %s", r.stderr)
	}
	wantCode(t, run(t, env, "", "--user", sd, "nixos", "generate", "--from", saved, "--out", out, "--force"), 0, "generate --force")
	if b, _ := os.ReadFile(filepath.Join(out, "mine.txt")); string(b) != "keep" {
		t.Error("--force touched an unknown file")
	}
}
