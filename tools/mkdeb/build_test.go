package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const testVersion = "0.0.0~test1.abc1234"

// buildDeb builds op-dbus (static, with a version stamp) and packages it,
// once per test binary run.
func buildDeb(t *testing.T) (repo, deb string) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		unavailable(t, "dpkg-deb not installed")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "op-dbus")
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-s -w -X github.com/op-dbus/op-dbus/internal/cli.Version=v-test-stamp", "-o", bin, "./cmd/op-dbus")
	build.Dir = repo // the main module's go.mod, not this tool's
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	deb, err = Build(Options{Repo: repo, Binary: bin, Out: dir, Version: testVersion})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(deb) != "op-dbus_"+testVersion+"_amd64.deb" {
		t.Errorf("package file name %s", filepath.Base(deb))
	}
	return repo, deb
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func TestDeb(t *testing.T) {
	repo, deb := buildDeb(t)

	t.Run("control", func(t *testing.T) {
		want := map[string]string{
			"Package":      "op-dbus",
			"Version":      testVersion,
			"Architecture": "amd64",
			"Depends":      "dbus",
			"Recommends":   "systemd",
			"Section":      "admin",
			"Priority":     "optional",
		}
		for f, v := range want {
			if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, f)); got != v {
				t.Errorf("%s: %q, want %q", f, got, v)
			}
		}
		for _, f := range []string{"Maintainer", "Description"} {
			if strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, f)) == "" {
				t.Errorf("%s is empty", f)
			}
		}
		info := run(t, "dpkg-deb", "--info", deb)
		for _, s := range []string{"postinst", "prerm", "postrm", "conffiles"} {
			if !strings.Contains(info, s) {
				t.Errorf("dpkg-deb --info lists no %s:\n%s", s, info)
			}
		}
		if got := strings.TrimSpace(run(t, "dpkg-deb", "--info", deb, "conffiles")); got != "/etc/op-dbus/state.yaml" {
			t.Errorf("conffiles: %q", got)
		}
	})

	t.Run("contents", func(t *testing.T) {
		want := map[string]string{
			"./usr/bin/op-dbus":                                  "-rwxr-xr-x",
			"./lib/systemd/system/op-dbus.service":               "-rw-r--r--",
			"./usr/share/dbus-1/system.d/org.opdbus1.conf":       "-rw-r--r--",
			"./etc/op-dbus/state.yaml":                           "-rw-r--r--",
			"./usr/share/man/man1/op-dbus.1.gz":                  "-rw-r--r--",
			"./usr/share/man/man1/op-dbus-serve.1.gz":            "-rw-r--r--",
			"./usr/share/man/man1/op-dbus-apply.1.gz":            "-rw-r--r--",
			"./usr/share/bash-completion/completions/op-dbus":    "-rw-r--r--",
			"./usr/share/zsh/vendor-completions/_op-dbus":        "-rw-r--r--",
			"./usr/share/fish/vendor_completions.d/op-dbus.fish": "-rw-r--r--",
			"./usr/share/doc/op-dbus/copyright":                  "-rw-r--r--",
			"./usr/share/doc/op-dbus/changelog.gz":               "-rw-r--r--",
			"./usr/share/lintian/overrides/op-dbus":              "-rw-r--r--",
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 {
				t.Fatalf("dpkg-deb --contents line %q", l)
			}
			if f[1] != "root/root" {
				t.Errorf("%s owned by %s", f[len(f)-1], f[1])
			}
			got[f[len(f)-1]] = f[0]
			if strings.HasPrefix(f[len(f)-1], "./usr/share/man/") && strings.HasSuffix(f[len(f)-1], ".1") {
				t.Errorf("man page not gzipped: %s", f[len(f)-1])
			}
		}
		for p, mode := range want {
			if got[p] != mode {
				t.Errorf("%s: mode %q, want %q", p, got[p], mode)
			}
		}
	})

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)

	t.Run("binary", func(t *testing.T) {
		out := run(t, filepath.Join(root, "usr/bin/op-dbus"), "--version")
		if !strings.Contains(out, "v-test-stamp") {
			t.Errorf("--version: %q", out)
		}
		if out, err := exec.Command("file", filepath.Join(root, "usr/bin/op-dbus")).Output(); err == nil &&
			!strings.Contains(string(out), "statically linked") {
			t.Errorf("the binary is not static (Depends names only dbus): %s", out)
		}
	})

	t.Run("default state manages nothing", func(t *testing.T) {
		conf := filepath.Join(root, "etc/op-dbus/state.yaml")
		out := run(t, filepath.Join(root, "usr/bin/op-dbus"), "validate", conf)
		if !strings.Contains(out, "valid") {
			t.Errorf("validate: %q", out)
		}
		b, _ := os.ReadFile(conf)
		if !regexp.MustCompile(`(?m)^plugins: \{\}$`).Match(b) {
			t.Errorf("default state names plugins:\n%s", b)
		}
	})

	t.Run("unit", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/op-dbus.service"))
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		for _, s := range []string{
			"\nType=notify\n",
			"\nExecStart=/usr/bin/op-dbus serve --state /etc/op-dbus/state.yaml --mode report ",
			"\nWantedBy=multi-user.target\n",
		} {
			if !strings.Contains(unit, s) {
				t.Errorf("unit lacks %q", strings.TrimSpace(s))
			}
		}
		if src, _ := os.ReadFile(filepath.Join(repo, "dist/op-dbus.service")); string(src) != unit {
			t.Error("packaged unit differs from dist/op-dbus.service")
		}
		if v, err := exec.LookPath("systemd-analyze"); err == nil {
			// Checks the unit's syntax and that ExecStart's binary exists.
			cmd := exec.Command(v, "verify", "--root="+root, "/lib/systemd/system/op-dbus.service")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Logf("systemd-analyze verify (informational): %v\n%s", err, out)
			}
		}
	})

	t.Run("man", func(t *testing.T) {
		page := filepath.Join(root, "usr/share/man/man1/op-dbus-serve.1.gz")
		f, err := os.Open(page)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		src, _ := io.ReadAll(zr)
		if !strings.HasPrefix(strings.TrimSpace(string(src)), ".nh") && !strings.Contains(string(src), ".TH \"OP-DBUS\" \"1\"") {
			t.Errorf("not a man page:\n%.300s", src)
		}
		if _, err := exec.LookPath("man"); err != nil {
			unavailable(t, "man not installed")
		}
		cmd := exec.Command("man", "-l", page)
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("man -l: %v", err)
		}
		for _, s := range []string{"NAME", "op-dbus-serve", "SYNOPSIS", "--mode"} {
			if !strings.Contains(string(out), s) {
				t.Errorf("man -l output lacks %q", s)
			}
		}
	})

	t.Run("completions", func(t *testing.T) {
		run(t, "bash", "-n", filepath.Join(root, "usr/share/bash-completion/completions/op-dbus"))
		// Loading it defines the completion function for op-dbus.
		out := run(t, "bash", "-c", `. "$1" && complete -p op-dbus`, "bash",
			filepath.Join(root, "usr/share/bash-completion/completions/op-dbus"))
		if !strings.Contains(out, "op-dbus") {
			t.Errorf("complete -p: %q", out)
		}
		for shell, p := range map[string]string{"zsh": "usr/share/zsh/vendor-completions/_op-dbus",
			"fish": "usr/share/fish/vendor_completions.d/op-dbus.fish"} {
			if _, err := exec.LookPath(shell); err != nil {
				b, _ := os.ReadFile(filepath.Join(root, p))
				if !bytes.Contains(b, []byte("op-dbus")) {
					t.Errorf("%s completion does not name op-dbus", shell)
				}
				continue
			}
			run(t, shell, "-n", filepath.Join(root, p))
		}
	})

	t.Run("maintainer scripts", func(t *testing.T) {
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(ctrl, s)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s: mode %v", s, fi.Mode())
			}
			run(t, "sh", "-n", p)
			if _, err := exec.LookPath("checkbashisms"); err == nil {
				run(t, "checkbashisms", p)
			}
		}
	})

	t.Run("dpkg install, remove, purge", func(t *testing.T) {
		// A real dpkg -i in a private mount namespace: overlays over /usr,
		// /etc and /var take every write, so the host is left as it was;
		// a tmpfs over /run makes it a host where systemd is not running.
		if os.Geteuid() != 0 {
			unavailable(t, "needs root for a mount namespace")
		}
		if _, err := exec.LookPath("unshare"); err != nil {
			unavailable(t, "unshare not installed")
		}
		script := `set -e
for d in /usr /etc /var; do
	mkdir -p "$T$d/up" "$T$d/work"
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$T$d/up,workdir=$T$d/work" "$d"
done
mount -t tmpfs tmpfs /run
dpkg -i "$DEB" >/dev/null
dpkg-query -W -f='status=${Status}\n' op-dbus
stat -c 'mode %a %U %n' /var/lib/op-dbus
echo "enabled=$(systemctl is-enabled op-dbus.service 2>&1 || true)"
op-dbus --version
op-dbus validate /etc/op-dbus/state.yaml
man -w op-dbus-serve
dpkg -r op-dbus >/dev/null
[ -d /var/lib/op-dbus ] && echo "removed: state kept"
[ -f /etc/op-dbus/state.yaml ] && echo "removed: conffile kept"
dpkg --purge op-dbus >/dev/null
[ ! -e /var/lib/op-dbus ] && echo "purged: state gone"
[ ! -e /etc/op-dbus ] && echo "purged: /etc/op-dbus gone"
`
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
		// Not t.TempDir(): its name has a comma, which overlay options split on.
		ovl, err := os.MkdirTemp("", "mkdeb-overlay-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(ovl)
		cmd.Env = append(os.Environ(), "T="+ovl, "DEB="+deb)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, s := range []string{
			"status=install ok installed",
			"mode 700 root /var/lib/op-dbus",
			"enabled=enabled",
			"v-test-stamp",
			"valid",
			"/usr/share/man/man1/op-dbus-serve.1.gz",
			"removed: state kept", "removed: conffile kept",
			"purged: state gone", "purged: /etc/op-dbus gone",
		} {
			if !strings.Contains(string(out), s) {
				t.Errorf("no %q in:\n%s", s, out)
			}
		}
	})

	t.Run("lintian", func(t *testing.T) {
		if _, err := exec.LookPath("lintian"); err != nil {
			unavailable(t, "lintian not installed (apt-get install lintian)")
		}
		out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
		t.Logf("lintian:\n%s", out)
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "E: ") && !lintianAccepted(l) {
				t.Errorf("lintian error: %s", l)
			}
		}
	})
}

// lintianAccepted are the errors this package knowingly has, each with why.
func lintianAccepted(line string) bool {
	for _, tag := range []string{
		// None yet: the package ships its own overrides
		// (dist/deb/lintian-overrides) for what it knowingly does.
	} {
		if strings.Contains(line, " "+tag) {
			return true
		}
	}
	return false
}

func TestDebVersion(t *testing.T) {
	if !describeRE.MatchString("v1.2.3-4-gabc1234") {
		t.Error("describe pattern")
	}
	for _, v := range []string{"0.0.0~git179.7191642", "1.2.3", "1.2.3+git4.abc1234", "1:2.0"} {
		if !validDebVersion(v) {
			t.Errorf("%q rejected", v)
		}
	}
	for _, v := range []string{"", "v1.2.3", "abc", "1.2 3", "1.2_3"} {
		if validDebVersion(v) {
			t.Errorf("%q accepted", v)
		}
	}
	repo, _ := filepath.Abs("../..")
	v, err := DebVersion(repo)
	if err != nil {
		t.Fatal(err)
	}
	if !validDebVersion(v) {
		t.Errorf("DebVersion %q is not a valid Debian version", v)
	}
	if _, err := exec.LookPath("dpkg"); err == nil {
		// dpkg's own parser is the oracle.
		if out, err := exec.Command("dpkg", "--compare-versions", v, "gt", "0.0.0~").CombinedOutput(); err != nil {
			t.Errorf("dpkg --compare-versions %s: %v %s", v, err, out)
		}
	}
}
