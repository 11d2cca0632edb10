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
)

// NetNS is an empty network namespace for network tests: only lo, which is
// up. It runs under an sh that is PID 1 of new PID, mount and network
// namespaces. In the mount namespace /proc and /sys are mounted afresh (so
// /sys/class/net lists this namespace's links) and /run (= /var/run) is an
// empty tmpfs, so sockets daemons put under /run (/run/wireguard/*.sock,
// /run/openvswitch, /run/NetworkManager) stay inside the bed.
//
// Processes started with Start (daemons) or Exec/Command (oracles, the
// op-dbus binary) run inside all three namespaces. In-process code reaches
// the network namespace through NetNSPath (netlink.NewHandleAt). Close kills
// the init by PID; the kernel then kills everything in the PID namespace
// and the namespaces, links, addresses and routes vanish with it.
type NetNS struct {
	Dir string

	proc    *nsProc
	nsenter string

	mu       sync.Mutex
	children []*exec.Cmd
}

// netnsFlags are the namespaces Exec, Command and Start enter.
var netnsFlags = []string{"-m", "-p", "-n"}

// StartNetNS starts a NetNS whose files (log, daemon logs, sockets a test
// puts there) live in dir, an existing directory. It needs root.
func StartNetNS(ctx context.Context, dir string) (*NetNS, error) {
	if err := needRoot(); err != nil {
		return nil, err
	}
	nsenter, err := needProgram("nsenter", "util-linux")
	if err != nil {
		return nil, err
	}
	if _, err := needProgram("ip", "iproute2"); err != nil {
		return nil, err
	}
	if _, err := needProgram("mount", "mount"); err != nil {
		return nil, err
	}
	dir, err = checkDir(dir, 40)
	if err != nil {
		return nil, err
	}
	var s strings.Builder
	line := func(l string) { s.WriteString(l + "\n") }
	line("set -e")
	line("export LIBMOUNT_UTAB=" + shq(filepath.Join(dir, "utab"))) // not the host's /run/mount
	line("mount --make-rprivate /")
	line("mount -t proc proc /proc")
	line("mount -t sysfs sysfs /sys")
	line("mount -t tmpfs -o mode=0755 tmpfs /run")
	line("mkdir -p /run/netns /run/wireguard /run/openvswitch /run/NetworkManager")
	line("unset LIBMOUNT_UTAB")
	line("ip link set lo up")
	line("touch " + shq(filepath.Join(dir, "ready")))
	line("set +e")
	// PID 1 of the namespace: reaps orphans, lives until killed.
	line("while :; do sleep 3600 & wait; done")
	n := &NetNS{Dir: dir, nsenter: nsenter}
	proc, err := startNS(s.String(), bedEnv(), syscall.CLONE_NEWNET, filepath.Join(dir, "netns.log"))
	if err != nil {
		return nil, err
	}
	n.proc = proc
	err = proc.waitReady(ctx, 10*time.Second, "network namespace", func(context.Context) error {
		_, err := os.Stat(filepath.Join(dir, "ready"))
		return err
	})
	if err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// NewNetNS starts a NetNS in a new temp dir for t and registers its Close
// (then the dir's removal) with t.Cleanup. If it cannot start, the test fails
// when CI=true and is skipped otherwise, naming the package to install.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	dir := bedTempDir(t, "tb-net-")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := StartNetNS(ctx, dir)
	if err != nil {
		unavailable(t, "a network namespace", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close network namespace bed: %v", err)
		}
	})
	return n
}

// PID is the host PID of the namespace init.
func (n *NetNS) PID() int { return n.proc.pid() }

// NetNSPath is the path of the network namespace, for
// netns.GetFromPath / netlink.NewHandleAt in the test process.
func (n *NetNS) NetNSPath() string { return "/proc/" + strconv.Itoa(n.PID()) + "/ns/net" }

// Command returns an unstarted command that runs argv inside the bed's
// namespaces, with the environment env (nil: the bed's default, os.Environ
// without service-manager variables).
func (n *NetNS) Command(ctx context.Context, env []string, argv ...string) *exec.Cmd {
	if env == nil {
		env = bedEnv()
	}
	cmd := exec.CommandContext(ctx, n.nsenter, n.proc.nsenter(netnsFlags, argv)...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Exec runs argv inside the bed and returns its combined output; the error
// includes it. `ip -j addr` through Exec is the netlink oracle.
func (n *NetNS) Exec(ctx context.Context, argv ...string) (string, error) {
	return runOutput(ctx, bedEnv(), n.nsenter, n.proc.nsenter(netnsFlags, argv)...)
}

// Start starts a long-running process (a daemon, in the foreground) inside
// the bed, its output appended to Dir/name.log. It dies with the bed.
func (n *NetNS) Start(name string, env []string, argv ...string) (*exec.Cmd, error) {
	if err := n.proc.exitErr(); err != nil {
		return nil, err
	}
	if env == nil {
		env = bedEnv()
	}
	cmd, err := startLoggedIn(n.Dir, name, env, n.nsenter, n.proc.nsenter(netnsFlags, argv))
	if err != nil {
		return nil, fmt.Errorf("in network namespace: %w", err)
	}
	n.mu.Lock()
	n.children = append(n.children, cmd)
	n.mu.Unlock()
	return cmd, nil
}

// Log returns the end of Dir/name.log, for error messages.
func (n *NetNS) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, name+".log"))
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimRight(string(b), "\n")
}

// Close kills the bed's init by PID, which kills every process in it, and
// reaps the nsenter processes Start left. Idempotent.
func (n *NetNS) Close() error {
	err := n.proc.close()
	n.mu.Lock()
	children := n.children
	n.children = nil
	n.mu.Unlock()
	for _, c := range children {
		// nsenter -p forks and waits for its child, which died with the
		// namespace; kill it anyway in case it has not noticed yet.
		_ = c.Process.Kill()
		_ = c.Wait()
	}
	return err
}
