package nixos

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden")

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(canonical(t, b))
}

func goldenInputs(t *testing.T) map[string]Input {
	return map[string]Input{
		"many-units": {Doc: fixture(t, "many-units.json"), Source: "testdata/many-units.json", System: "x86_64-linux",
			DefaultSkip: "no NixOS option in the service map"},
		"admin-units": {Doc: fixture(t, "many-units.json"), Source: "the live host", System: "aarch64-linux",
			Units: map[string]*UnitDef{"myapp.service": {
				Description: `My "app" ${HOME} 100%`,
				ExecStart: []ExecCommand{
					{Path: "/usr/local/bin/myapp", Argv: []string{"/usr/local/bin/myapp", "--name", "a b", `q"uote`, "50%", "$HOME"}},
					{Path: "/bin/true", Argv: []string{"true"}, IgnoreFailure: true},
				},
				User: "app", Restart: "on-failure", Type: "simple",
				WantedBy:    []string{"multi-user.target"},
				Environment: []string{"A=1", "PATH_X=${x}\\y", "WEIRD-NAME=v"},
			}},
			Skipped: map[string]string{"backup.timer": "written by an administrator (/etc/systemd/system/backup.timer), but only .service units are rebuilt"},
			Errors:  map[string]string{"network": "unavailable: no such plugin"},
		},
		"empty": {Doc: []byte(`{"plugins":{},"version":1}`), Source: "testdata/empty.json"},
	}
}

func TestGolden(t *testing.T) {
	for name, in := range goldenInputs(t) {
		t.Run(name, func(t *testing.T) {
			files, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := Generate(in)
			dir := filepath.Join("testdata", "golden", name)
			if *update {
				os.RemoveAll(dir)
				if err := WriteDir(dir, files, false); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range files.Names() {
				if string(files[n]) != string(again[n]) {
					t.Errorf("%s: not deterministic", n)
				}
				want, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if string(want) != string(files[n]) {
					t.Errorf("%s differs from %s (go test -update to accept):\n%s", n, dir, files[n])
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != len(files) {
				t.Errorf("%s holds %d files, generator wrote %d", dir, len(ents), len(files))
			}
		})
	}
}

// Every generated .nix file parses, and op-dbus-state.nix evaluates to
// the state it came from.
func TestGeneratedNixParsesAndStateRoundTrips(t *testing.T) {
	needNix(t)
	for name, in := range goldenInputs(t) {
		t.Run(name, func(t *testing.T) {
			files, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := WriteDir(dir, files, false); err != nil {
				t.Fatal(err)
			}
			for _, n := range files.Names() {
				if strings.HasSuffix(n, ".nix") {
					nixParse(t, filepath.Join(dir, n))
				}
			}
			got := canonical(t, nixEval(t, filepath.Join(dir, "op-dbus-state.nix")))
			if want := canonical(t, in.Doc); got != want {
				t.Fatalf("op-dbus-state.nix evaluates to\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestServicesNeverEmptyDefinitions(t *testing.T) {
	in := goldenInputs(t)["admin-units"]
	files, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	s := string(files["services.nix"])
	for _, w := range []string{
		`services.openssh.enable = true;`, `virtualisation.vswitch.enable = true;`, `systemd.services.myapp = {`,
		`ExecStart = [`, `"/usr/local/bin/myapp --name \"a b\" \"q\\\"uote\" 50%% $HOME"`, `"-@/bin/true true"`, `description = "My \"app\" \${HOME} 100%%";`,
		"#   backup.timer: written by an administrator", "#   mariadb.service:",
	} {
		if !strings.Contains(s, w) {
			t.Errorf("services.nix lacks %q:\n%s", w, s)
		}
	}
	if strings.Contains(s, "= { };") {
		t.Errorf("services.nix has an empty definition:\n%s", s)
	}
	if strings.Contains(s, "networking.networkmanager") && !strings.Contains(s, "set in network.nix") {
		t.Error("NetworkManager set twice")
	}
	if !strings.Contains(string(files["network.nix"]), "networking.networkmanager.enable = true;") {
		t.Errorf("network.nix:\n%s", files["network.nix"])
	}
}

func TestExecLine(t *testing.T) {
	for _, c := range []struct {
		c    ExecCommand
		want string
	}{
		{ExecCommand{Path: "/bin/echo", Argv: []string{"/bin/echo", "hi"}}, "/bin/echo hi"},
		{ExecCommand{Path: "/bin/sh", Argv: []string{"sh", "-c", "echo $1; x\\y"}}, `@/bin/sh sh -c "echo $1; x\\y"`},
		{ExecCommand{Path: "/bin/x", Argv: []string{"/bin/x", "", "100%"}, IgnoreFailure: true}, `-/bin/x "" 100%%`},
	} {
		if got := c.c.line(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.c, got, c.want)
		}
	}
}

func TestWriteDirRefusesOtherFilesUnlessForced(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "notes.txt")
	os.WriteFile(other, []byte("mine"), 0o600)
	files := Files{"host.nix": []byte("{ }\n")}
	err := WriteDir(dir, files, false)
	if err == nil || !strings.Contains(err.Error(), "notes.txt") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("want a refusal naming notes.txt and --force, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "host.nix")); !os.IsNotExist(err) {
		t.Fatal("wrote despite refusing")
	}
	if err := WriteDir(dir, files, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(other); string(b) != "mine" {
		t.Fatal("an unknown file was changed")
	}
	// Regenerating into a directory holding only our files needs no --force.
	if err := WriteDir(filepath.Join(dir, "sub"), files, false); err != nil {
		t.Fatal(err)
	}
	if err := WriteDir(filepath.Join(dir, "sub"), files, false); err != nil {
		t.Fatal(err)
	}
}

func TestServiceMapOptionsLookRight(t *testing.T) {
	for name, m := range services.Units {
		if (m.Option == "") == (m.Reason == "") {
			t.Errorf("%s: exactly one of option and reason", name)
		}
		if m.Option != "" && !strings.HasSuffix(m.Option, ".enable") {
			t.Errorf("%s: option %s does not end in .enable", name, m.Option)
		}
	}
	for _, w := range [][2]string{{"openssh.service", "services.openssh.enable"}, {"nginx.service", "services.nginx.enable"}, {"openvswitch-switch.service", "virtualisation.vswitch.enable"}, {"NetworkManager.service", "networking.networkmanager.enable"}} {
		if m, _ := Lookup(w[0]); m.Option != w[1] {
			t.Errorf("%s → %q, want %s", w[0], m.Option, w[1])
		}
	}
	var _ = json.Valid
}
