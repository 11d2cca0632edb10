package nixos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// The fake store paths nix/eval-module.nix gives the stub packages.
const (
	fakePackage   = "/nix/store/00000000000000000000000000000000-op-dbus"
	fakeCoreutils = "/nix/store/00000000000000000000000000000000-coreutils"
	fakeStateDoc  = "/nix/store/00000000000000000000000000000000-op-dbus-state.json"
)

// nixpkgsLib finds nixpkgs' lib/: ../shared/nixpkgs-lib/lib beside the
// repository (as CI lays it out), else /work/shared/nixpkgs-lib/lib.
// Missing, the test fails in CI and is skipped otherwise.
func nixpkgsLib(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	candidates := []string{
		filepath.Join(root, "..", "shared", "nixpkgs-lib", "lib"),
		"/work/shared/nixpkgs-lib/lib",
	}
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "default.nix")); err == nil {
			return c
		}
	}
	msg := "nixpkgs' lib/ not found at " + strings.Join(candidates, " or ") + " (a copy of shared/nixpkgs-lib beside the repository)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// moduleEval evaluates the module with config and decodes attr into v.
func moduleEval(t *testing.T, config, attr string, v any) {
	t.Helper()
	nix := needNix(t)
	lib := nixpkgsLib(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := EvalModule(ctx, nix, repoRoot(t), lib, config, attr, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v\n%s", attr, err, out)
	}
}

// moduleService evaluates config and returns systemd.services.op-dbus and
// its ExecStart split into argv; it fails on failed assertions.
func moduleService(t *testing.T, config string) (SystemdService, []string) {
	t.Helper()
	var failed []string
	moduleEval(t, config, "failedAssertions", &failed)
	if len(failed) > 0 {
		t.Fatalf("assertions fail for %s: %q", config, failed)
	}
	var svc SystemdService
	moduleEval(t, config, "service", &svc)
	exec, _ := svc.ServiceConfig["ExecStart"].(string)
	argv, err := ExecArgs(exec)
	if err != nil {
		t.Fatal(err)
	}
	return svc, argv
}

func strs(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			s, _ := unitValue(e)
			out = append(out, s)
		}
		return out
	default:
		s, _ := unitValue(x)
		return []string{s}
	}
}

func wantConfig(t *testing.T, svc SystemdService, key string, want ...string) {
	t.Helper()
	if got := strs(svc.ServiceConfig[key]); !slices.Equal(got, want) {
		t.Errorf("serviceConfig.%s = %q, want %q", key, got, want)
	}
}

const reportConfig = `{ services.op-dbus = { enable = true; state = { version = 1; plugins.systemd.units."nginx.service".active_state = "active"; }; }; }`

func TestModuleReportModeDefaults(t *testing.T) {
	svc, argv := moduleService(t, reportConfig)
	want := []string{fakePackage + "/bin/op-dbus", "serve", "--state=/etc/op-dbus/state.json", "--mode=report",
		"--state-dir=/var/lib/op-dbus", "--dbus=system", "--api-socket=/run/op-dbus/api.sock"}
	if !slices.Equal(argv, want) {
		t.Errorf("ExecStart argv = %q, want %q", argv, want)
	}
	wantConfig(t, svc, "Type", "notify")
	wantConfig(t, svc, "NotifyAccess", "main")
	wantConfig(t, svc, "WatchdogSec", "60s")
	wantConfig(t, svc, "Restart", "on-failure")
	wantConfig(t, svc, "ExecReload", fakeCoreutils+"/bin/kill -HUP $MAINPID")
	wantConfig(t, svc, "StateDirectory", "op-dbus")
	wantConfig(t, svc, "StateDirectoryMode", "0700")
	wantConfig(t, svc, "RuntimeDirectory", "op-dbus")
	wantConfig(t, svc, "ReadWritePaths")
	wantConfig(t, svc, "RestrictAddressFamilies", "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6")
	wantConfig(t, svc, "CapabilityBoundingSet", "CAP_NET_ADMIN", "CAP_NET_RAW")
	if !slices.Equal(svc.After, []string{"dbus.service", "network.target"}) || !slices.Equal(svc.Wants, []string{"dbus.service"}) {
		t.Errorf("after %q wants %q", svc.After, svc.Wants)
	}
	if !slices.Equal(svc.WantedBy, []string{"multi-user.target"}) {
		t.Errorf("wantedBy %q", svc.WantedBy)
	}
	if len(svc.ReloadTriggers) != 1 || svc.ReloadTriggers[0] != fakeStateDoc {
		t.Errorf("reloadTriggers %v, want the validated document %s", svc.ReloadTriggers, fakeStateDoc)
	}

	var etc map[string]map[string]any
	moduleEval(t, reportConfig, "etc", &etc)
	if etc["op-dbus/state.json"]["source"] != fakeStateDoc {
		t.Errorf("environment.etc = %v", etc)
	}
	var pkgs []string
	moduleEval(t, reportConfig, "dbusPackages", &pkgs)
	if !slices.Equal(pkgs, []string{fakePackage}) {
		t.Errorf("services.dbus.packages = %q (the bus policy for org.opdbus1)", pkgs)
	}
	var timer, oneshot any
	moduleEval(t, reportConfig, "timer", &timer)
	moduleEval(t, reportConfig, "oneshot", &oneshot)
	if timer != nil || oneshot != nil {
		t.Errorf("timer off by default, got timer %v oneshot %v", timer, oneshot)
	}
}

const enforceTCPConfig = `{ services.op-dbus = {
  enable = true; mode = "enforce"; state.version = 1;
  apiListen = "127.0.0.1:7810"; apiTokenFile = "/run/secrets/op-dbus-token";
  mcp = true; mcpAllowApply = true; confirmWithin = "90s"; interval = "10m";
  dbus = "none"; extraArgs = [ "--debounce=200ms" "--snapshot-keep=50" ];
}; }`

func TestModuleEnforceWithTCPAPI(t *testing.T) {
	svc, argv := moduleService(t, enforceTCPConfig)
	want := []string{fakePackage + "/bin/op-dbus", "serve", "--state=/etc/op-dbus/state.json", "--mode=enforce",
		"--state-dir=/var/lib/op-dbus", "--dbus=none", "--api-socket=/run/op-dbus/api.sock",
		"--api-listen=127.0.0.1:7810", "--api-token-file=/run/secrets/op-dbus-token",
		"--mcp", "--mcp-allow-apply", "--confirm-within=90s", "--interval=10m", "--debounce=200ms", "--snapshot-keep=50"}
	if !slices.Equal(argv, want) {
		t.Errorf("ExecStart argv =\n %q\nwant\n %q", argv, want)
	}
	wantConfig(t, svc, "RestrictAddressFamilies", "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6")
	runServeHelp(t, argv)
}

func TestModuleStateDirOutsideVarLib(t *testing.T) {
	config := `{ services.op-dbus = { enable = true; state.version = 1; stateDir = "/srv/op-dbus"; apiSocket = "/srv/sock/api.sock"; }; }`
	svc, argv := moduleService(t, config)
	if !slices.Contains(argv, "--state-dir=/srv/op-dbus") || !slices.Contains(argv, "--api-socket=/srv/sock/api.sock") {
		t.Errorf("argv %q", argv)
	}
	for _, k := range []string{"StateDirectory", "RuntimeDirectory"} {
		if v, ok := svc.ServiceConfig[k]; ok {
			t.Errorf("serviceConfig.%s = %v outside /var/lib and /run", k, v)
		}
	}
	wantConfig(t, svc, "ReadWritePaths", "/srv/op-dbus", "/srv/sock")
	var rules []string
	moduleEval(t, config, "tmpfiles", &rules)
	if !slices.Equal(rules, []string{"d /srv/op-dbus 0700 root root -"}) {
		t.Errorf("tmpfiles rules %q", rules)
	}

	// Below /var/lib, however deep: StateDirectory= alone.
	svc, argv = moduleService(t, `{ services.op-dbus = { enable = true; state.version = 1; stateDir = "/var/lib/opd/main"; apiSocket = null; }; }`)
	wantConfig(t, svc, "StateDirectory", "opd/main")
	wantConfig(t, svc, "ReadWritePaths")
	if _, ok := svc.ServiceConfig["RuntimeDirectory"]; ok || slices.ContainsFunc(argv, func(a string) bool { return strings.HasPrefix(a, "--api-socket") }) {
		t.Errorf("apiSocket = null still serves a socket: %q %v", argv, svc.ServiceConfig["RuntimeDirectory"])
	}
}

func TestModuleOrdersAfterPluginServices(t *testing.T) {
	svc, _ := moduleService(t, `{ services.op-dbus = { enable = true; state = { version = 1; plugins = { ovs.bridges = { }; networkmanager = { }; hostname.static_hostname = "h"; }; }; }; }`)
	for _, u := range []string{"ovsdb.service", "NetworkManager.service"} {
		if !slices.Contains(svc.After, u) || !slices.Contains(svc.Wants, u) {
			t.Errorf("%s missing from after %q / wants %q", u, svc.After, svc.Wants)
		}
	}
	svc, _ = moduleService(t, `{ services.op-dbus = { enable = true; state = { version = 1; plugins.ovs = { }; }; }; }`)
	if !slices.Contains(svc.After, "ovsdb.service") || slices.Contains(svc.After, "NetworkManager.service") {
		t.Errorf("ovs only: after %q", svc.After)
	}
}

func TestModuleAssertions(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{`{ services.op-dbus = { enable = true; state.version = 1; apiListen = "0.0.0.0:7810"; }; }`, "apiListen needs apiTokenFile"},
		{`{ services.op-dbus = { enable = true; state.version = 1; interval = "15min"; }; }`, "interval must be a Go duration"},
		{`{ services.op-dbus = { enable = true; state.version = 1; mcpAllowApply = true; }; }`, "mcpAllowApply needs mcp"},
		{`{ services.op-dbus = { enable = true; state.version = 1; mcp = true; apiSocket = null; }; }`, "mcp is served on the API's listeners"},
		{`{ services.op-dbus = { enable = true; }; }`, "exactly one of state and stateFile"},
		{`{ services.op-dbus = { enable = true; state.version = 1; stateDir = "var/x"; }; }`, "stateDir must be an absolute path"},
	} {
		var failed []string
		moduleEval(t, c.config, "failedAssertions", &failed)
		if !slices.ContainsFunc(failed, func(m string) bool { return strings.Contains(m, c.want) }) {
			t.Errorf("%s: failed assertions %q, want one saying %q", c.config, failed, c.want)
		}
	}
}

func TestModuleTimerOption(t *testing.T) {
	for _, c := range []struct {
		mode string
		cmd  []string
		ok   []string
	}{
		{"report", []string{"verify"}, []string{"2"}},
		{"enforce", []string{"apply", "--yes"}, nil},
	} {
		config := `{ services.op-dbus = { enable = true; state.version = 1; mode = "` + c.mode + `"; timer = { enable = true; interval = "1h"; extraArgs = [ "--snapshot-keep=5" ]; }; }; }`
		var oneshot, timer SystemdService
		moduleEval(t, config, "oneshot", &oneshot)
		moduleEval(t, config, "timer", &timer)
		argv, err := ExecArgs(strs(oneshot.ServiceConfig["ExecStart"])[0])
		if err != nil {
			t.Fatal(err)
		}
		want := append([]string{fakePackage + "/bin/op-dbus", "--state-dir=/var/lib/op-dbus", "--snapshot-keep=5"}, c.cmd...)
		want = append(want, "/etc/op-dbus/state.json")
		if !slices.Equal(argv, want) {
			t.Errorf("%s: oneshot argv %q, want %q", c.mode, argv, want)
		}
		if out, err := exec.Command(opDBus(t), append(slices.Clone(argv[1:]), "--help")...).CombinedOutput(); err != nil {
			t.Errorf("op-dbus %q --help: %v\n%s", argv[1:], err, out)
		}
		wantConfig(t, oneshot, "Type", "oneshot")
		wantConfig(t, oneshot, "SuccessExitStatus", c.ok...)
		if got := strs(timer.TimerConfig["OnUnitActiveSec"]); !slices.Equal(got, []string{"1h"}) {
			t.Errorf("timer %v", timer.TimerConfig)
		}
		text, err := RenderUnitFile(timer)
		if err != nil || !strings.Contains(text, "[Timer]\nOnBootSec=1min\nOnUnitActiveSec=1h\n") || strings.Contains(text, "[Service]") {
			t.Errorf("rendered timer (%v):\n%s", err, text)
		}
	}
}

// Arguments with quotes, spaces, % and $ reach op-dbus unchanged.
func TestModuleExecStartEscaping(t *testing.T) {
	awkwardArgs := []string{`--x=a b`, `50%`, `%n`, `$MAINPID`, `${X}`, `"q"`, `'s'`, `back\slash`, "tab\there", "ü"}
	var list []string
	for _, a := range awkwardArgs {
		s, err := Render(a)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, s)
	}
	_, argv := moduleService(t, `{ services.op-dbus = { enable = true; state.version = 1; extraArgs = [ `+strings.Join(list, " ")+` ]; }; }`)
	if got := argv[len(argv)-len(awkwardArgs):]; !slices.Equal(got, awkwardArgs) {
		t.Errorf("extraArgs came back as %q, want %q", got, awkwardArgs)
	}
}

// The module's sandboxing is at least as strict as dist/op-dbus.service's.
func TestModuleHardeningNotWeakerThanDist(t *testing.T) {
	svc, _ := moduleService(t, enforceTCPConfig)
	dist := readUnitFile(t, filepath.Join(repoRoot(t), "dist", "op-dbus.service"))
	yes := map[string]bool{"yes": true, "true": true}
	for key, vals := range dist {
		d := vals[len(vals)-1]
		m := strs(svc.ServiceConfig[key])
		switch key {
		case "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
			"ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictNamespaces",
			"RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute":
			if yes[d] && !slices.Equal(m, []string{"true"}) {
				t.Errorf("%s: dist says %s, module %q", key, d, m)
			}
		case "ProtectSystem", "SystemCallArchitectures", "SystemCallErrorNumber", "UMask", "MemoryMax", "TasksMax", "NotifyAccess", "Type", "WatchdogSec":
			if !slices.Equal(m, []string{d}) {
				t.Errorf("%s: dist says %s, module %q", key, d, m)
			}
		case "ProtectHome":
			if len(m) != 1 || (m[0] != "true" && m[0] != d) {
				t.Errorf("%s: dist says %s, module %q", key, d, m)
			}
		case "CapabilityBoundingSet", "AmbientCapabilities":
			allowed := strings.Fields(d)
			for _, c := range m {
				for _, c := range strings.Fields(c) {
					if !slices.Contains(allowed, c) {
						t.Errorf("%s: module grants %s, dist only %q", key, c, allowed)
					}
				}
			}
		case "RestrictAddressFamilies":
			allowed := strings.Fields(d)
			for _, f := range m {
				if !slices.Contains(allowed, f) {
					t.Errorf("RestrictAddressFamilies: module allows %s, dist only %q", f, allowed)
				}
			}
		case "SystemCallFilter":
			for _, v := range vals {
				if !slices.Contains(m, v) {
					t.Errorf("SystemCallFilter: dist has %s, module %q", v, m)
				}
			}
		}
	}
}

// readUnitFile reads key=value lines of a unit file (all sections).
func readUnitFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		out[k] = append(out[k], v)
	}
	return out
}

var (
	builtOnce sync.Once
	built     string
	buildErr  error
	buildOut  []byte
)

// opDBus builds cmd/op-dbus once for this package's tests.
func opDBus(t *testing.T) string {
	t.Helper()
	builtOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nixos-module-test-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "op-dbus")
		cmd := exec.Command("go", "build", "-o", built, "./cmd/op-dbus")
		cmd.Dir = repoRoot(t)
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/op-dbus: %v\n%s", buildErr, buildOut)
	}
	return built
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built != "" {
		os.RemoveAll(filepath.Dir(built))
	}
	os.Exit(code)
}

// runServeHelp runs the real op-dbus with the unit's arguments plus --help:
// every flag the module writes exists.
func runServeHelp(t *testing.T, argv []string) {
	t.Helper()
	if argv[0] != fakePackage+"/bin/op-dbus" || argv[1] != "serve" {
		t.Fatalf("argv %q", argv)
	}
	cmd := exec.Command(opDBus(t), append(slices.Clone(argv[1:]), "--help")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("op-dbus %q --help: %v\n%s", argv[1:], err, out)
	}
	if !strings.Contains(string(out), "Usage:\n  op-dbus serve") {
		t.Fatalf("op-dbus %q --help printed\n%s", argv[1:], out)
	}
}

// The service renders into a unit file that systemd-analyze verify accepts,
// with the fake store paths pointed at the built binary and the host's kill.
func TestModuleRenderedUnitVerifies(t *testing.T) {
	timerConfig := `{ services.op-dbus = { enable = true; state.version = 1; timer.enable = true; }; }`
	for _, c := range []struct{ name, config string }{{"report", reportConfig}, {"enforce-tcp", enforceTCPConfig}, {"timer", timerConfig}} {
		t.Run(c.name, func(t *testing.T) {
			_, argv := moduleService(t, c.config)
			runServeHelp(t, argv)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			text, svc, err := ModuleUnitFile(ctx, needNix(t), repoRoot(t), nixpkgsLib(t), c.config, "service", t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"[Unit]\n", "\n[Service]\n", "Type=notify\n", "\n[Install]\nWantedBy=multi-user.target\n",
				"ExecStart=" + strs(svc.ServiceConfig["ExecStart"])[0] + "\n", "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n"} {
				if !strings.Contains(text, want) {
					t.Errorf("rendered unit lacks %q:\n%s", want, text)
				}
			}
			analyze := testbed.Program(t, "systemd-analyze", "systemd")
			dir := t.TempDir()
			pkg := filepath.Join(dir, "pkg")
			if err := os.MkdirAll(filepath.Join(pkg, "bin"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(opDBus(t), filepath.Join(pkg, "bin", "op-dbus")); err != nil {
				t.Fatal(err)
			}
			kill := testbed.Program(t, "kill", "procps")
			real := strings.NewReplacer(fakeStateDoc, fakeStateDoc, fakePackage, pkg, fakeCoreutils+"/bin/kill", kill)
			files := map[string]string{"op-dbus.service": real.Replace(text)}
			if c.name == "timer" {
				for attr, name := range map[string]string{"oneshot": "op-dbus-oneshot.service", "timer": "op-dbus-oneshot.timer"} {
					text, _, err := ModuleUnitFile(ctx, needNix(t), repoRoot(t), nixpkgsLib(t), c.config, attr, t.TempDir())
					if err != nil {
						t.Fatal(err)
					}
					files[name] = real.Replace(text)
				}
			}
			args := []string{"verify", "--man=no"}
			text = ""
			for name, body := range files {
				if os.Getenv("NIXWT_SHOW") != "" {
					t.Logf("%s:\n%s", name, body)
				}
				unit := filepath.Join(dir, name)
				if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, unit)
				text += "# " + name + "\n" + body
			}
			cmd := exec.Command(analyze, args...)
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze verify: %v\n%s\nunit:\n%s", err, out, text)
			}
			// verify exits 0 on unknown keys and bad values, and says so:
			// anything it says is a failure.
			if len(bytes.TrimSpace(out)) > 0 {
				t.Fatalf("systemd-analyze verify complains:\n%s\nunit:\n%s", out, text)
			}
		})
	}
}

// The states `op-dbus nixos generate` writes go into the module the way its
// flake.nix hands them over, and the service is ordered after the daemons
// their plugins talk to.
func TestModuleTakesGeneratedStates(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*/op-dbus-state.nix")
	if len(files) == 0 {
		t.Fatal("no golden op-dbus-state.nix")
	}
	seen := map[string]bool{}
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		config := `{ services.op-dbus = { enable = true; mode = "report"; state = import ` + nixString(t, abs) + `; }; }`
		svc, _ := moduleService(t, config)
		var cfg struct {
			State struct {
				Plugins map[string]json.RawMessage `json:"plugins"`
			} `json:"state"`
		}
		moduleEval(t, config, "config", &cfg)
		for plugin, unit := range map[string]string{"ovs": "ovsdb.service", "networkmanager": "NetworkManager.service"} {
			_, uses := cfg.State.Plugins[plugin]
			seen[plugin] = seen[plugin] || uses
			if got := slices.Contains(svc.After, unit) && slices.Contains(svc.Wants, unit); got != uses {
				t.Errorf("%s: names plugin %s: %v, but after %q wants %q", f, plugin, uses, svc.After, svc.Wants)
			}
		}
	}
	if !seen["ovs"] || !seen["networkmanager"] {
		t.Errorf("the golden states should name ovs and networkmanager somewhere: %v", seen)
	}
}

// The module's check of interval and confirmWithin accepts what Go's
// time.ParseDuration (the flags' parser) accepts, for these samples.
func TestModuleDurationCheckAgreesWithGo(t *testing.T) {
	for _, d := range []string{"0", "5m", "1h30m", ".5s", "1.5h", "1.s", "2µs", "300ms", "15min", "", "5", "s", "1d", "-1m", "1 m"} {
		_, err := time.ParseDuration(d)
		goOK := err == nil && !strings.HasPrefix(d, "-")
		var failed []string
		moduleEval(t, `{ services.op-dbus = { enable = true; state.version = 1; interval = `+nixString(t, d)+`; }; }`, "failedAssertions", &failed)
		if nixOK := len(failed) == 0; nixOK != goOK {
			t.Errorf("interval %q: module accepts: %v, Go: %v (%v) %q", d, nixOK, goOK, err, failed)
		}
	}
}

func nixString(t *testing.T, s string) string {
	t.Helper()
	r, err := Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
