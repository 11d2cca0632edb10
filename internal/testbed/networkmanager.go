package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// NetworkManager is a real NetworkManager in its own network, mount and UTS
// namespaces, on a private system bus.
//
// dbus-daemon (a <type>system</type> bus, permissive policy, no service
// directories) runs as a plain child of the test process and listens on
// Dir/system_bus_socket, so the test process, nmcli and the op-dbus binary
// reach NetworkManager through BusAddress from the host.
//
// NetworkManager runs without a PID namespace of its own: it authorizes
// every request by the caller's PID (it reads /proc/PID/stat of the
// caller), and a caller outside a PID namespace (the test process) has no
// PID inside it, so every change would fail with "Unable to determine UID
// of the request". Instead NetworkManager is exec'd as the first process of
// new network, mount and UTS namespaces; the host's /proc stays (so caller
// PIDs resolve), /sys is mounted afresh (it lists the bed's links), /run,
// /var/lib/NetworkManager and /etc/NetworkManager/system-connections are
// empty tmpfs, and its config, keyfile directory (Dir/system-connections),
// state and intern config files live in Dir. Its config has
// auth-polkit=false (root callers only; there is no polkit on the bus),
// dns=none and rc-manager=unmanaged (never /etc/resolv.conf),
// hostname-mode=none, no-auto-default=* and the internal DHCP client.
//
// Without udev NetworkManager reports veth and other externally created
// links as unmanaged; bridges and other software devices it creates itself
// work. Close kills NetworkManager and dbus-daemon by PID; the network
// namespace and everything in it vanish with NetworkManager.
type NetworkManager struct {
	Dir        string
	BusAddress string   // value for DBUS_SYSTEM_BUS_ADDRESS: "unix:path=Dir/system_bus_socket"
	Env        []string // os.Environ() with DBUS_SYSTEM_BUS_ADDRESS set
	// KeyfileDir is where NetworkManager stores connection profiles.
	KeyfileDir string

	nsenter string
	bus     *nsProc // dbus-daemon, on the host
	nm      *nsProc // NetworkManager, init of the namespaces
}

// networkManagerConf is NetworkManager.conf for the bed.
func networkManagerConf(keyfileDir string) string {
	return `[main]
plugins=keyfile
no-auto-default=*
auth-polkit=false
dhcp=internal
dns=none
rc-manager=unmanaged
hostname-mode=none
[keyfile]
path=` + keyfileDir + `
[logging]
level=INFO
[connectivity]
enabled=false
`
}

// StartNetworkManager starts the bed in dir, an existing directory, and
// returns once NetworkManager answers on the bus, or fails after 30s. It
// needs root.
func StartNetworkManager(ctx context.Context, dir string) (*NetworkManager, error) {
	if err := needRoot(); err != nil {
		return nil, err
	}
	nmBin, err := needProgram("NetworkManager", "network-manager")
	if err != nil {
		if p, ferr := needFile("network-manager", "/usr/sbin/NetworkManager"); ferr == nil {
			nmBin, err = p, nil
		} else {
			return nil, err
		}
	}
	var dbusDaemon, nsenter string
	for _, p := range []struct {
		name, pkg string
		path      *string
	}{
		{"dbus-daemon", "dbus", &dbusDaemon},
		{"nsenter", "util-linux", &nsenter},
		{"nmcli", "network-manager", nil},
		{"ip", "iproute2", nil},
		{"mount", "mount", nil},
	} {
		path, err := needProgram(p.name, p.pkg)
		if err != nil {
			return nil, err
		}
		if p.path != nil {
			*p.path = path
		}
	}
	dir, err = checkDir(dir, len("/system_bus_socket"))
	if err != nil {
		return nil, err
	}
	n := &NetworkManager{Dir: dir, nsenter: nsenter, KeyfileDir: filepath.Join(dir, "system-connections")}
	sock := filepath.Join(dir, "system_bus_socket")
	n.BusAddress = "unix:path=" + sock
	n.Env = bedEnv("DBUS_SYSTEM_BUS_ADDRESS=" + n.BusAddress)
	services := filepath.Join(dir, "services") // empty: nothing is activated
	confDir := filepath.Join(dir, "conf.d")    // empty: no host conf.d
	for _, d := range []string{services, confDir, n.KeyfileDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	busConf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(busConf, []byte(systemBusConf(sock, services)), 0o644); err != nil {
		return nil, err
	}
	nmConf := filepath.Join(dir, "NetworkManager.conf")
	if err := os.WriteFile(nmConf, []byte(networkManagerConf(n.KeyfileDir)), 0o644); err != nil {
		return nil, err
	}

	// The bus, on the host.
	bus := exec.Command(dbusDaemon, "--config-file="+busConf, "--nofork", "--nopidfile", "--nosyslog")
	n.bus, err = startLogged(bus, bedEnv(), 0, filepath.Join(dir, "dbus.log"))
	if err != nil {
		return nil, fmt.Errorf("start dbus-daemon: %w", err)
	}
	err = n.bus.waitReady(ctx, 20*time.Second, "dbus-daemon", func(ctx context.Context) error {
		if _, err := os.Stat(sock); err != nil {
			return err
		}
		c, err := dbus.Connect(n.BusAddress, dbus.WithContext(ctx))
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return nil, errors.Join(err, n.Close())
	}

	var s strings.Builder
	line := func(l string) { s.WriteString(l + "\n") }
	line("set -e")
	line("export LIBMOUNT_UTAB=" + shq(filepath.Join(dir, "utab"))) // not the host's /run/mount
	line("mount --make-rprivate /")
	line("mount -t sysfs sysfs /sys")
	line("mount -t tmpfs -o mode=0755 tmpfs /run")
	line("mkdir -p /run/NetworkManager")
	for _, d := range []string{"/var/lib/NetworkManager", "/etc/NetworkManager/system-connections", "/usr/lib/NetworkManager/system-connections"} {
		line("if [ -d " + d + " ]; then mount -t tmpfs -o mode=0700 tmpfs " + d + "; fi")
	}
	line("unset LIBMOUNT_UTAB")
	line("ip link set lo up")
	line("exec " + shq(nmBin) + " --debug" +
		" --config=" + shq(nmConf) +
		" --config-dir=" + shq(confDir) +
		" --system-config-dir=" + shq(confDir) +
		" --intern-config=" + shq(filepath.Join(dir, "NetworkManager-intern.conf")) +
		" --state-file=" + shq(filepath.Join(dir, "NetworkManager.state")) +
		" --pid-file=" + shq(filepath.Join(dir, "NetworkManager.pid")))
	sh, err := exec.LookPath("sh")
	if err != nil {
		return nil, errors.Join(&MissingError{What: "sh", Package: "dash"}, n.Close())
	}
	nm := exec.Command(sh, "-c", s.String())
	n.nm, err = startLogged(nm, n.Env, syscall.CLONE_NEWNET|syscall.CLONE_NEWNS|syscall.CLONE_NEWUTS, filepath.Join(dir, "NetworkManager.log"))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start NetworkManager: %w", err), n.Close())
	}
	err = n.nm.waitReady(ctx, 30*time.Second, "NetworkManager", n.ping)
	if err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// ping succeeds once NetworkManager owns its name and its settings and
// device list answer.
func (n *NetworkManager) ping(ctx context.Context) error {
	c, err := dbus.Connect(n.BusAddress, dbus.WithContext(ctx))
	if err != nil {
		return err
	}
	defer c.Close()
	var paths []dbus.ObjectPath
	if err := c.Object("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager").
		CallWithContext(ctx, "org.freedesktop.NetworkManager.GetDevices", 0).Store(&paths); err != nil {
		return err
	}
	return c.Object("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager/Settings").
		CallWithContext(ctx, "org.freedesktop.NetworkManager.Settings.ListConnections", 0).Store(&paths)
}

// startLogged starts cmd (with Pdeathsig, in a new session, with extra
// clone flags) with its output appended to logPath, and returns it as an
// nsProc for waitReady and close.
func startLogged(cmd *exec.Cmd, env []string, cloneflags uintptr, logPath string) (*nsProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags, Setsid: true}
	if err := startCmd(cmd); err != nil {
		return nil, err
	}
	p := &nsProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// NewNetworkManager starts a NetworkManager bed in a new temp dir for t and
// registers its Close (then the dir's removal) with t.Cleanup. If it cannot
// start, the test fails when CI=true and is skipped otherwise, naming the
// package to install.
func NewNetworkManager(t testing.TB) *NetworkManager {
	t.Helper()
	dir := bedTempDir(t, "tb-nm-")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := StartNetworkManager(ctx, dir)
	if err != nil {
		var me *MissingError
		if os.Getenv("CI") != "true" && !errors.As(err, &me) {
			err = fmt.Errorf("%w (needs root and Debian packages network-manager dbus iproute2 util-linux)", err)
		}
		unavailable(t, "NetworkManager", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close NetworkManager bed: %v", err)
		}
	})
	return n
}

// PID is the host PID of NetworkManager, the first process of the bed's
// namespaces.
func (n *NetworkManager) PID() int { return n.nm.pid() }

// NetNSPath is the path of the bed's network namespace, for
// netlink.NewHandleAt in the test process.
func (n *NetworkManager) NetNSPath() string { return "/proc/" + strconv.Itoa(n.PID()) + "/ns/net" }

// Command returns an unstarted command that runs argv in the bed's network
// and mount namespaces with Env (env nil) or env.
func (n *NetworkManager) Command(ctx context.Context, env []string, argv ...string) *exec.Cmd {
	if env == nil {
		env = n.Env
	}
	cmd := exec.CommandContext(ctx, n.nsenter, n.nm.nsenter([]string{"-n", "-m", "-u"}, argv)...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Exec runs argv in the bed's network and mount namespaces with Env and
// returns its combined output; the error includes it. `ip -j addr` through
// Exec is the netlink oracle.
func (n *NetworkManager) Exec(ctx context.Context, argv ...string) (string, error) {
	if err := n.nm.exitErr(); err != nil {
		return "", err
	}
	return runOutput(ctx, n.Env, n.nsenter, n.nm.nsenter([]string{"-n", "-m", "-u"}, argv)...)
}

// Nmcli runs nmcli ARGS inside the bed, over its bus: the independent
// client a user would run.
func (n *NetworkManager) Nmcli(ctx context.Context, args ...string) (string, error) {
	return n.Exec(ctx, append([]string{"nmcli"}, args...)...)
}

// Log returns the end of NetworkManager's log, for error messages.
func (n *NetworkManager) Log() string { return n.nm.logTail() }

// Close kills NetworkManager, then dbus-daemon, each by PID, and waits for
// them. Idempotent. Files in Dir are left to the caller.
func (n *NetworkManager) Close() error {
	var errs []error
	if n.nm != nil {
		errs = append(errs, n.nm.close())
	}
	if n.bus != nil {
		errs = append(errs, n.bus.close())
	}
	return errors.Join(errs...)
}
