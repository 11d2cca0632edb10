package nixos

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// The unit the NixOS module makes runs under real systemd: the rendered
// op-dbus.service, its sandbox unchanged, is started in a booted Debian
// (systemd as PID 1) with the built binary in place of the store path. It
// reaches READY (Type=notify), owns org.opdbus1 on the system bus, serves
// its API socket, and stops cleanly.
func TestTestbedModuleUnitRunsUnderSystemd(t *testing.T) {
	config := `{ services.op-dbus = { enable = true; state = { version = 1; plugins.hostname.location = "from the module"; }; }; }`
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	text, _, err := ModuleUnitFile(ctx, needNix(t), repoRoot(t), nixpkgsLib(t), config, "service", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := testbed.NewBootedHost(t)
	unit := strings.NewReplacer(fakePackage, "/opt/op-dbus", fakeCoreutils+"/bin/kill", "/bin/kill").Replace(text)
	dir := t.TempDir()
	files := map[string]string{
		"/etc/systemd/system/op-dbus.service": unit,
		"/etc/op-dbus/state.json":             `{"version":1,"plugins":{"hostname":{"location":"from the module"}}}`,
	}
	for path, body := range files {
		host := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(host, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.CopyIn(host, path); err != nil {
			t.Fatalf("copy %s: %v", path, err)
		}
	}
	if err := b.CopyIn(opDBus(t), "/opt/op-dbus/bin/op-dbus"); err != nil {
		t.Fatal(err)
	}
	if err := b.CopyIn(filepath.Join(repoRoot(t), "dist", "org.opdbus1.conf"), "/etc/dbus-1/system.d/org.opdbus1.conf"); err != nil {
		t.Fatal(err)
	}
	in := func(argv ...string) string {
		t.Helper()
		out, err := b.Exec(ctx, argv...)
		if err != nil {
			t.Fatalf("%v in the booted host: %v\n%s", argv, err, out)
		}
		return strings.TrimSpace(out)
	}
	in("chmod", "0755", "/opt/op-dbus/bin/op-dbus")
	in("busctl", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig")
	in("systemctl", "daemon-reload")
	if out, err := b.Exec(ctx, "systemctl", "start", "op-dbus.service"); err != nil {
		logs, _ := b.Exec(ctx, "journalctl", "-u", "op-dbus.service", "--no-pager", "-n", "50")
		t.Fatalf("systemctl start op-dbus: %v %s\n%s", err, out, logs)
	}
	if got := in("systemctl", "is-active", "op-dbus.service"); got != "active" {
		t.Fatalf("op-dbus.service is %s after start", got)
	}
	var mode string
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, err := b.Exec(ctx, "busctl", "get-property", "org.opdbus1", "/org/opdbus1", "org.opdbus1.Manager", "Mode")
		if err == nil {
			mode = strings.TrimSpace(out)
			break
		}
		if time.Now().After(deadline) {
			logs, _ := b.Exec(ctx, "journalctl", "-u", "op-dbus.service", "--no-pager", "-n", "50")
			t.Fatalf("org.opdbus1 not on the booted host's system bus: %v %s\n%s", err, out, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if mode != `s "report"` {
		t.Errorf("org.opdbus1 Mode = %s, want report", mode)
	}
	in("test", "-S", "/run/op-dbus/api.sock")
	start := time.Now()
	in("systemctl", "stop", "op-dbus.service")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("systemctl stop took %s", took.Round(time.Millisecond))
	}
	if got, _ := b.Exec(ctx, "systemctl", "is-active", "op-dbus.service"); strings.TrimSpace(got) != "inactive" {
		t.Errorf("op-dbus.service is %s after stop", strings.TrimSpace(got))
	}
}
