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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
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
// of the request". Instead an sh, the holder, is the first process of new
// network, mount and UTS namespaces; the host's /proc stays (so caller PIDs
// resolve), /sys is mounted afresh (it lists the bed's links), /run,
// /var/lib/NetworkManager and /etc/NetworkManager/system-connections are
// empty tmpfs, and NetworkManager's config, keyfile directory
// (Dir/system-connections), state and intern config files and its pid-file
// (NetworkManager.pid, written for it) live in Dir.
// Its config has auth-polkit=false (root callers only; there is no polkit
// on the bus), dns=none and rc-manager=unmanaged (never /etc/resolv.conf),
// hostname-mode=none, no-auto-default=* and the internal DHCP client.
//
// The holder runs NetworkManager in a loop (with a parent-death signal, so
// it dies with the holder): the namespaces, their links and /run outlive
// NetworkManager, RestartNetworkManager kills it and waits for the next one
// as a restart of the service would, and Start runs other daemons (OVS) in
// the same namespaces.
//
// Without udev NetworkManager reports veth and other externally created
// links as unmanaged; bridges and other software devices it creates itself
// work. Before each (re)start the holder marks the links that exist then
// (but lo) as initialized in the bed's /run/udev, so a restarted
// NetworkManager assumes the links and active profiles it had, as on a
// host with udev (and externally created links that existed before the
// restart become managed too). Restart it once its profiles are active:
// killed mid-activation it takes the half-configured link for an external
// one on restart and generates an in-memory profile for it, as on a host.
//
// Close kills the holder, NetworkManager, Start'ed processes and
// dbus-daemon by PID; the network namespace and everything in it vanish
// with the last of them.
type NetworkManager struct {
	Dir        string
	BusAddress string   // value for DBUS_SYSTEM_BUS_ADDRESS: "unix:path=Dir/system_bus_socket"
	Env        []string // os.Environ() with DBUS_SYSTEM_BUS_ADDRESS set
	// KeyfileDir is where NetworkManager stores connection profiles.
	KeyfileDir string

	nsenter string
	pidFile string  // NetworkManager's PID, written by the holder's loop
	bus     *nsProc // dbus-daemon, on the host
	nm      *nsProc // the holder: sh, first process of the namespaces, runs NetworkManager in a loop

	mu       sync.Mutex
	children []*exec.Cmd // Start'ed processes
	closed   bool
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
	var dbusDaemon, nsenter, setpriv string
	for _, p := range []struct {
		name, pkg string
		path      *string
	}{
		{"dbus-daemon", "dbus", &dbusDaemon},
		{"nsenter", "util-linux", &nsenter},
		{"setpriv", "util-linux", &setpriv},
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
	n := &NetworkManager{Dir: dir, nsenter: nsenter, KeyfileDir: filepath.Join(dir, "system-connections"),
		pidFile: filepath.Join(dir, "NetworkManager.pid")}
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

	sh, err := exec.LookPath("sh")
	if err != nil {
		return nil, errors.Join(&MissingError{What: "sh", Package: "dash"}, n.Close())
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
	line("set +e")
	// The holder lives until killed; NetworkManager is its child and gets
	// SIGKILL when the holder dies (Close), and is started again when it
	// exits (RestartNetworkManager).
	line("while :; do")
	line("  rm -f " + shq(n.pidFile))
	// There is no udev: NetworkManager leaves links udev has not
	// initialized unmanaged, so after a restart it would drop the links it
	// made before. Mark the links that exist (but lo, as on the first
	// start) initialized in the bed's own /run/udev, so it assumes them
	// as it does on a host.
	line("  mkdir -p /run/udev/data")
	line(`  for d in /sys/class/net/*; do [ "${d##*/}" != lo ] && [ -e "$d/ifindex" ] && echo I:1 >"/run/udev/data/n$(cat "$d/ifindex")"; done`)
	// NetworkManager writes no pid-file when it does not daemonize
	// (--debug), so an sh writes its own PID and execs setpriv, which execs
	// NetworkManager: one PID, a child of the holder. (Not NetworkManager's
	// own --pid-file: it would find itself "already running".)
	line("  " + shq(sh) + " -c " + shq(`echo $$ >"$0" && exec "$@"`) + " " + shq(n.pidFile) + " " +
		shq(setpriv) + " --pdeathsig KILL -- " + shq(nmBin) + " --debug" +
		" --config=" + shq(nmConf) +
		" --config-dir=" + shq(confDir) +
		" --system-config-dir=" + shq(confDir) +
		" --intern-config=" + shq(filepath.Join(dir, "NetworkManager-intern.conf")) +
		" --state-file=" + shq(filepath.Join(dir, "NetworkManager.state")))
	line(`  echo "testbed: NetworkManager exited with status $?; starting it again"`)
	line("  sleep 0.2")
	line("done")
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

// PID is the host PID of the holder, the first process of the bed's
// namespaces (an sh that runs NetworkManager). NetworkManagerPID is
// NetworkManager's.
func (n *NetworkManager) PID() int { return n.nm.pid() }

// NetNSPath is the path of the bed's network namespace, for
// netlink.NewHandleAt in the test process. It stays valid across
// RestartNetworkManager.
func (n *NetworkManager) NetNSPath() string { return "/proc/" + strconv.Itoa(n.PID()) + "/ns/net" }

// NetworkManagerPID is the host PID of the running NetworkManager, from its
// pid-file, or 0 when none runs (between a restart and the next start). A
// PID is returned only if that process is a child of the bed's holder, so a
// stale pid-file never names someone else's process.
func (n *NetworkManager) NetworkManagerPID() int {
	b, err := os.ReadFile(n.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || parentOf(pid) != n.PID() {
		return 0
	}
	return pid
}

// parentOf is the PPid of pid from /proc/PID/status, or 0.
func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PPid:"); ok {
			pp, _ := strconv.Atoi(strings.TrimSpace(v))
			return pp
		}
	}
	return 0
}

// nmPidfd opens a pidfd for the running NetworkManager: signals sent
// through it cannot reach a process that reused the PID. It returns 0, -1
// when none runs.
func (n *NetworkManager) nmPidfd() (pid, fd int) {
	pid = n.NetworkManagerPID()
	if pid == 0 {
		return 0, -1
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, -1
	}
	// The pidfd refers to whatever has pid now: check it is still ours.
	if parentOf(pid) != n.PID() {
		unix.Close(fd)
		return 0, -1
	}
	return pid, fd
}

// waitPidfd waits until the process of a pidfd has exited (the pidfd
// becomes readable), or ctx ends.
func waitPidfd(ctx context.Context, fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		nr, err := unix.Poll(fds, 100)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if nr > 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// killNetworkManager sends SIGKILL to the running NetworkManager and waits
// until it is gone, or ctx ends. It returns the PID it killed, 0 if none
// was running.
func (n *NetworkManager) killNetworkManager(ctx context.Context) (int, error) {
	pid, fd := n.nmPidfd()
	if pid == 0 {
		return 0, nil
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return 0, fmt.Errorf("kill NetworkManager %d: %w", pid, err)
	}
	if err := waitPidfd(ctx, fd); err != nil {
		return pid, fmt.Errorf("NetworkManager %d still running after SIGKILL: %w", pid, err)
	}
	return pid, nil
}

// nameOwner is the unique bus name owning org.freedesktop.NetworkManager,
// or "" when nobody does.
func (n *NetworkManager) nameOwner(ctx context.Context) (string, error) {
	c, err := dbus.Connect(n.BusAddress, dbus.WithContext(ctx))
	if err != nil {
		return "", err
	}
	defer c.Close()
	var owner string
	err = c.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, "org.freedesktop.NetworkManager").Store(&owner)
	var de dbus.Error
	if errors.As(err, &de) && de.Name == "org.freedesktop.DBus.Error.NameHasNoOwner" {
		return "", nil
	}
	return owner, err
}

// RestartNetworkManager kills NetworkManager with SIGKILL (by the PID in its
// pid-file), waits until it is gone, and returns once the holder has
// started the next one and it answers on the bus under a new unique name,
// or fails after 30s. Links, addresses, /run and the keyfiles stay, as
// across a restart of the NetworkManager service.
func (n *NetworkManager) RestartNetworkManager(ctx context.Context) error {
	if err := n.nm.exitErr(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	oldOwner, err := n.nameOwner(ctx)
	if err != nil {
		return fmt.Errorf("restart NetworkManager: ask the bus who owns org.freedesktop.NetworkManager: %w", err)
	}
	pid, err := n.killNetworkManager(ctx)
	if err != nil {
		return fmt.Errorf("restart NetworkManager: %w", err)
	}
	if pid == 0 {
		return fmt.Errorf("restart NetworkManager: no NetworkManager runs in the bed (pid-file %s); log:\n%s", n.pidFile, n.Log())
	}
	return n.nm.waitReady(ctx, 30*time.Second, "NetworkManager after restart", func(ctx context.Context) error {
		if p := n.NetworkManagerPID(); p == 0 || p == pid {
			return fmt.Errorf("no new NetworkManager PID in %s yet", n.pidFile)
		}
		owner, err := n.nameOwner(ctx)
		if err != nil {
			return err
		}
		if owner == "" || owner == oldOwner {
			return fmt.Errorf("org.freedesktop.NetworkManager owned by %q, want a new owner (old %q)", owner, oldOwner)
		}
		return n.ping(ctx)
	})
}

// Start starts a long-running process (a daemon, in the foreground, such as
// ovsdb-server or ovs-vswitchd) in the bed's network, mount and UTS
// namespaces with Env (env nil) or env, in Dir, its output appended to
// Dir/name.log. Close kills it by PID and reaps it. There is no PID
// namespace: processes it forks are not killed with it.
func (n *NetworkManager) Start(name string, env []string, argv ...string) (*exec.Cmd, error) {
	if err := n.nm.exitErr(); err != nil {
		return nil, err
	}
	if env == nil {
		env = n.Env
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("start " + name + ": the NetworkManager bed is closed")
	}
	cmd, err := startLoggedIn(n.Dir, name, env, n.nsenter, n.nm.nsenter([]string{"-n", "-m", "-u"}, argv))
	if err != nil {
		return nil, fmt.Errorf("in the NetworkManager bed: %w", err)
	}
	n.children = append(n.children, cmd)
	return cmd, nil
}

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

// Log returns the end of NetworkManager's log (the holder's output), for
// error messages.
func (n *NetworkManager) Log() string { return n.nm.logTail() }

// StopBus kills the bed's dbus-daemon by PID and waits for it, so tests can
// see how clients behave when the system bus goes away. NetworkManager
// loses its bus and the holder keeps starting it again (and failing) until
// Close. Close still cleans up; calling both is fine.
func (n *NetworkManager) StopBus() error {
	if n.bus == nil {
		return nil
	}
	return n.bus.close()
}

// Close kills the holder (its process group, which is NetworkManager's
// too), NetworkManager by the PID in its pid-file (belt and braces), the
// processes Start started, then dbus-daemon, each by PID, and waits for
// them. Idempotent. Files in Dir are left to the caller.
func (n *NetworkManager) Close() error {
	n.mu.Lock()
	n.closed = true
	children := n.children
	n.children = nil
	n.mu.Unlock()
	var errs []error
	if n.nm != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		nmPID, fd := n.nmPidfd() // while its parent, the holder, is alive
		select {
		case <-n.nm.done: // reaped: its PID (and group) may be someone else's now
		default:
			// The holder is our unreaped child, so its PID is still its
			// process group's ID: this kills the holder and NetworkManager
			// at once, before the holder could start another.
			_ = syscall.Kill(-n.nm.pid(), syscall.SIGKILL)
		}
		errs = append(errs, n.nm.close())
		if fd >= 0 {
			_ = unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			if err := waitPidfd(ctx, fd); err != nil {
				errs = append(errs, fmt.Errorf("NetworkManager %d still running after SIGKILL: %w", nmPID, err))
			} else {
				// It died with the holder, so init reaps it: wait (a
				// little) for that, so it is gone when Close returns.
				for i := 0; i < 200 && unix.PidfdSendSignal(fd, 0, nil, 0) == nil; i++ {
					time.Sleep(10 * time.Millisecond)
				}
			}
			unix.Close(fd)
		}
		cancel()
	}
	for _, c := range children {
		if err := c.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("kill %v: %w", c.Args, err))
		}
		_ = c.Wait()
	}
	if n.bus != nil {
		errs = append(errs, n.bus.close())
	}
	return errors.Join(errs...)
}
