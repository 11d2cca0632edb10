package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// UserManager is `systemd --user` with its own session bus, in private PID,
// mount and UTS namespaces.
//
// The session bus is the one a real login gets: the manager's own
// dbus.socket (Debian package dbus-user-session) listens on
// $XDG_RUNTIME_DIR/bus and starts dbus-daemon as dbus.service. A user
// manager only attaches to the bus once its dbus.service runs, so a
// dbus-daemon started beside it would never see org.freedesktop.systemd1.
//
// Only the PID namespace's view differs from a real session: PIDs the
// manager reports (MainPID, ExecMainPID, unit processes) are PIDs of the
// bed's namespace, not host PIDs.
type UserManager struct {
	Dir         string   // temp root of everything below
	BusAddress  string   // value for DBUS_SESSION_BUS_ADDRESS: "unix:path=RuntimeDir/bus"
	RuntimeDir  string   // XDG_RUNTIME_DIR (mode 0700), Dir/runtime
	ConfigHome  string   // XDG_CONFIG_HOME, Dir/config
	UnitDir     string   // ConfigHome/systemd/user, created; unit files written here are seen by the manager
	DataUnitDir string   // $XDG_DATA_HOME/systemd/user, created; also seen, below UnitDir: for units a test masks (see WriteUnit)
	Env         []string // os.Environ() with HOME, XDG_RUNTIME_DIR, XDG_CONFIG_HOME, XDG_DATA_HOME, XDG_STATE_HOME, XDG_CACHE_HOME and DBUS_SESSION_BUS_ADDRESS pointing into Dir

	proc    *nsProc
	nsenter string
}

// StartUserManager starts systemd --user in dir, an existing empty
// directory, and returns once org.freedesktop.systemd1 answers on the
// session bus and the manager has finished starting up (SystemState
// "running" or "degraded"), or fails after 20s. It needs root.
func StartUserManager(ctx context.Context, dir string) (*UserManager, error) {
	if err := needRoot(); err != nil {
		return nil, err
	}
	systemd, err := needFile("systemd", "/lib/systemd/systemd", "/usr/lib/systemd/systemd")
	if err != nil {
		return nil, err
	}
	if _, err := needFile("dbus-user-session", "/usr/lib/systemd/user/dbus.socket", "/lib/systemd/user/dbus.socket"); err != nil {
		return nil, err
	}
	var nsenter, setpriv string
	for _, p := range []struct {
		name, pkg string
		path      *string
	}{
		{"dbus-daemon", "dbus", nil},
		{"busctl", "systemd", nil},
		{"systemctl", "systemd", nil},
		{"mount", "mount", nil},
		{"nsenter", "util-linux", &nsenter},
		{"setpriv", "util-linux", &setpriv},
	} {
		path, err := needProgram(p.name, p.pkg)
		if err != nil {
			return nil, err
		}
		if p.path != nil {
			*p.path = path
		}
	}
	// Longest socket path below Dir: runtime/gnupg/S.gpg-agent.browser.
	dir, err = checkDir(dir, len("/runtime/gnupg/S.gpg-agent.browser")+4)
	if err != nil {
		return nil, err
	}
	m := &UserManager{
		Dir:        dir,
		RuntimeDir: filepath.Join(dir, "runtime"),
		ConfigHome: filepath.Join(dir, "config"),
		nsenter:    nsenter,
	}
	m.UnitDir = filepath.Join(m.ConfigHome, "systemd", "user")
	m.BusAddress = "unix:path=" + filepath.Join(m.RuntimeDir, "bus")
	home := filepath.Join(dir, "home")
	m.DataUnitDir = filepath.Join(home, ".local", "share", "systemd", "user")
	for _, d := range []string{home, m.UnitDir, m.DataUnitDir, filepath.Join(m.RuntimeDir, "systemd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(m.RuntimeDir, 0o700); err != nil {
		return nil, err
	}
	m.Env = bedEnv(
		"HOME="+home,
		"XDG_RUNTIME_DIR="+m.RuntimeDir,
		"XDG_CONFIG_HOME="+m.ConfigHome,
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_STATE_HOME="+filepath.Join(home, ".local", "state"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"DBUS_SESSION_BUS_ADDRESS="+m.BusAddress,
	)

	cg, err := planCgroups()
	if err != nil {
		return nil, err
	}
	var s strings.Builder
	line := func(l string) { s.WriteString(l + "\n") }
	line("set -e")
	line("export LIBMOUNT_UTAB=" + shq(filepath.Join(dir, "utab"))) // not the host's /run/mount
	for _, l := range cg.join {
		line(l)
	}
	line("mount --make-rprivate /")
	line("mount -t proc proc /proc")
	for _, l := range cg.mounts {
		line(l)
	}
	// sd_booted() and `systemd --user` want /run/systemd/system.
	line("if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 tmpfs /run/systemd; else mount -t tmpfs -o mode=0755 tmpfs /run; fi")
	line("mkdir -p /run/systemd/system")
	// Hide the manager's private socket from the host: its peer check needs
	// a PID valid in the bed's PID namespace, so host clients must use the
	// bus (systemctl falls back to it when the socket is absent).
	line("mount -t tmpfs -o mode=0755 tmpfs " + shq(filepath.Join(m.RuntimeDir, "systemd")))
	line("unset LIBMOUNT_UTAB")
	line("set +e")
	line(shq(setpriv) + " --inh-caps=-sys_time --bounding-set=-sys_time -- " + shq(systemd) +
		" --user --log-target=console --default-standard-output=inherit --default-standard-error=inherit &")
	line("wait")

	proc, err := startNS(s.String(), m.Env, syscall.CLONE_NEWUTS, filepath.Join(dir, "manager.log"))
	if err != nil {
		cg.remove()
		return nil, err
	}
	proc.cgroups = cg.dirs
	m.proc = proc
	err = proc.waitReady(ctx, 20*time.Second, "systemd --user", func(ctx context.Context) error {
		out, err := m.Busctl(ctx, "--auto-start=no", "--timeout=5", "get-property",
			"org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "SystemState")
		if err != nil {
			return err
		}
		if st := strings.TrimSpace(out); st != `s "running"` && st != `s "degraded"` {
			return fmt.Errorf("SystemState %s", st)
		}
		return nil
	})
	if err != nil {
		if cerr := m.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return m, nil
}

// Close kills the bed's namespace init by PID, which kills systemd, the
// session bus and every unit's processes; waits for them; and removes the
// bed's cgroups. Files in Dir are left to the caller.
func (m *UserManager) Close() error {
	return m.proc.close()
}

// Systemctl runs `systemctl --user ARGS` with m.Env inside the bed's
// namespaces, where it talks to the manager over $XDG_RUNTIME_DIR/systemd/private
// as on a real system (is-system-running works there too). It returns the
// combined output; the error includes it.
//
// From the host, `systemctl --user` with m.Env works as well: it finds no
// private socket and falls back to the session bus. Only is-system-running
// answers "offline" there, because the host has no /run/systemd/system.
func (m *UserManager) Systemctl(ctx context.Context, args ...string) (string, error) {
	return runOutput(ctx, m.Env, m.nsenter, m.proc.nsenter([]string{"-m", "-p", "-u"}, append([]string{"systemctl", "--user"}, args...))...)
}

// Busctl runs `busctl --user ARGS` on the host with m.Env, i.e. over the
// bed's session bus. It returns the combined output; the error includes it.
func (m *UserManager) Busctl(ctx context.Context, args ...string) (string, error) {
	return runOutput(ctx, m.Env, "busctl", append([]string{"--user"}, args...)...)
}

// Exec runs argv inside the bed's PID, mount and UTS namespaces with m.Env
// and returns the combined output; the error includes it.
func (m *UserManager) Exec(ctx context.Context, argv ...string) (string, error) {
	return runOutput(ctx, m.Env, m.nsenter, m.proc.nsenter([]string{"-m", "-p", "-u"}, argv)...)
}

// WriteUnit writes UnitDir/name. A unit the manager has not loaded yet can
// be started right away; after changing a unit it has loaded, run
// `daemon-reload` (until then it keeps the old definition and reports
// NeedDaemonReload=yes).
//
// systemd refuses to mask a unit whose file is in UnitDir ("File ...
// already exists"): the mask link goes there. Write units a test masks to
// DataUnitDir instead.
func (m *UserManager) WriteUnit(name, content string) error {
	if name == "" || strings.ContainsRune(name, '/') {
		return fmt.Errorf("testbed: bad unit name %q", name)
	}
	return os.WriteFile(filepath.Join(m.UnitDir, name), []byte(content), 0o644)
}
