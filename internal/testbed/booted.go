package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BootedRootDir is where the Debian root file system of BootedHost is
// cached. The suffix is its version: change it whenever bootedPackages or
// the mmdebstrap options change, so that the root is rebuilt.
const BootedRootDir = "/var/cache/op-dbus-testbed/debian-bookworm-v1"

// bootedPackages are installed (with their dependencies) on top of
// mmdebstrap's minbase variant.
var bootedPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "iputils-ping", "procps"}

// bootedMachine is the container's machine name (and its first hostname).
// Each bed has its own PID, mount and network namespaces, and nspawn runs
// with --register=no, so the name never clashes; the host side of the veth
// is ve-booted, in the bed's network namespace.
const bootedMachine = "booted"

// BootedHost is a whole Debian 12 booted with systemd as PID 1 in
// systemd-nspawn: journald, the system bus, logind, and hostnamed,
// timedated and localed activated on demand, as on a real machine. The
// container runs on a throwaway tmpfs overlay over the cached root
// (--volatile=overlay), so nothing it writes survives Close and the cache
// stays pristine.
//
// systemd-nspawn itself runs under an sh that is PID 1 of new PID, mount and
// network namespaces, in a cgroup of its own (as for UserManager), with a
// private /run. The container's network is --network-veth: host0 inside, and
// ve-booted in the bed's network namespace (HostExec), never in the host's.
type BootedHost struct {
	Dir string

	proc    *nsProc
	nsenter string
	leader  int // host PID of the container's systemd
	nspawn  int // host PID of systemd-nspawn
}

// bootedFlags are the namespaces HostExec enters: the nspawn side.
var bootedFlags = []string{"-m", "-p", "-n"}

// bootedEnv is the environment of commands run inside the container.
var bootedEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"TERM=dumb",
	"SYSTEMD_PAGER=",
	"SYSTEMD_COLORS=0",
}

// EnsureBootedRoot returns BootedRootDir, building it with mmdebstrap first
// if it does not exist. The build runs into a temp dir next to it and is
// renamed into place, so a killed build never leaves a half root; an
// exclusive flock on BootedRootDir+".lock" keeps two processes from building
// at once (the second waits, then finds the root). built reports whether
// this call built it, and took how long.
func EnsureBootedRoot(ctx context.Context, logw io.Writer) (root string, built time.Duration, err error) {
	if err := needRoot(); err != nil {
		return "", 0, err
	}
	mmdebstrap, err := needProgram("mmdebstrap", "mmdebstrap")
	if err != nil {
		return "", 0, err
	}
	unshare, err := needProgram("unshare", "util-linux")
	if err != nil {
		return "", 0, err
	}
	root = BootedRootDir
	if bootedRootOK(root) {
		return root, 0, nil
	}
	parent := filepath.Dir(root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", 0, err
	}
	lock, err := os.OpenFile(root+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", 0, err
	}
	defer lock.Close()
	if err := flockCtx(ctx, lock); err != nil {
		return "", 0, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if bootedRootOK(root) { // built by whoever held the lock
		return root, 0, nil
	}
	// Leftovers of killed builds: nobody else builds while we hold the lock.
	base := filepath.Base(root)
	if olds, _ := filepath.Glob(filepath.Join(parent, "."+base+".build-*")); len(olds) > 0 {
		for _, o := range olds {
			if err := noMountsUnder(o); err != nil {
				return "", 0, err
			}
			_ = os.RemoveAll(o)
		}
	}
	_ = os.RemoveAll(root) // incomplete (no os-release or systemd)
	tmp, err := os.MkdirTemp(parent, "."+base+".build-")
	if err != nil {
		return "", 0, err
	}
	defer os.RemoveAll(tmp) // gone after a successful rename
	target := filepath.Join(tmp, "root")
	start := time.Now()
	// In root mode mmdebstrap mounts /dev, /proc and /sys inside target,
	// and it forks workers. So it runs as PID 1 of new PID and private
	// mount namespaces: when the test process dies, unshare gets the
	// Pdeathsig, --kill-child kills mmdebstrap, and the kernel kills the
	// rest of the namespace; its mounts vanish with it, and the next build's
	// RemoveAll of the leftovers cannot reach the host's /dev.
	cmd := exec.CommandContext(ctx, unshare, "--mount", "--propagation", "private",
		"--pid", "--fork", "--kill-child", "--mount-proc", "--",
		mmdebstrap, "--mode=root", "--variant=minbase",
		"--include="+strings.Join(bootedPackages, ","), "bookworm", target)
	cmd.Env = bedEnv()
	cmd.Stdout = logw
	cmd.Stderr = logw
	cmd.WaitDelay = 10 * time.Second
	if err := startCmd(cmd); err != nil {
		return "", 0, fmt.Errorf("start mmdebstrap: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return "", 0, fmt.Errorf("mmdebstrap: %w", err)
	}
	if !bootedRootOK(target) {
		return "", 0, fmt.Errorf("mmdebstrap built %s without systemd", target)
	}
	if err := os.Rename(target, root); err != nil {
		return "", 0, err
	}
	return root, time.Since(start), nil
}

func bootedRootOK(root string) bool {
	for _, p := range []string{"usr/lib/os-release", "lib/systemd/systemd", "usr/bin/busctl", "usr/bin/dbus-daemon", "usr/bin/ip"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			return false
		}
	}
	return true
}

// noMountsUnder fails if anything is mounted at or below dir in the test
// process's mount namespace: RemoveAll would descend into it.
func noMountsUnder(dir string) error {
	ms, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(ms), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		if p := unescapeMountinfo(f[4]); p == dir || strings.HasPrefix(p, dir+"/") {
			return fmt.Errorf("%s is mounted below %s (a killed mmdebstrap?); unmount it first", p, dir)
		}
	}
	return nil
}

// flockCtx takes an exclusive flock on f, polling so ctx can end the wait.
func flockCtx(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// StartBootedHost boots the cached root (see EnsureBootedRoot, which it
// calls) in dir, an existing directory for the bed's logs, and returns once
// `systemctl is-system-running` inside says running or degraded.
func StartBootedHost(ctx context.Context, dir string) (*BootedHost, error) {
	if err := needRoot(); err != nil {
		return nil, err
	}
	nspawn, err := needProgram("systemd-nspawn", "systemd-container")
	if err != nil {
		return nil, err
	}
	nsenter, err := needProgram("nsenter", "util-linux")
	if err != nil {
		return nil, err
	}
	if _, err := needProgram("ip", "iproute2"); err != nil {
		return nil, err
	}
	dir, err = checkDir(dir, 40)
	if err != nil {
		return nil, err
	}
	blog, err := os.OpenFile(filepath.Join(dir, "mmdebstrap.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	root, _, err := EnsureBootedRoot(ctx, blog)
	blog.Close()
	if err != nil {
		return nil, err
	}
	return bootRoot(ctx, dir, root, nspawn, nsenter)
}

func bootRoot(ctx context.Context, dir, root, nspawn, nsenter string) (*BootedHost, error) {
	cg, err := planCgroups()
	if err != nil {
		return nil, err
	}
	var s strings.Builder
	line := func(l string) { s.WriteString(l + "\n") }
	line("set -e")
	line("export LIBMOUNT_UTAB=" + shq(filepath.Join(dir, "utab")))
	for _, l := range cg.join {
		line(l)
	}
	line("mount --make-rprivate /")
	line("mount -t proc proc /proc")
	line("mount -t sysfs sysfs /sys")
	for _, l := range cg.mounts {
		line(l)
	}
	// nspawn keeps its state (/run/systemd/nspawn) here, not on the host.
	line("mount -t tmpfs -o mode=0755 tmpfs /run")
	line("unset LIBMOUNT_UTAB")
	line("ip link set lo up")
	line("set +e")
	// SIGTERM to this init (Close) is passed to nspawn, which shuts the
	// container down cleanly: systemd inside gets SIGRTMIN+3 (halt).
	line("trap 'kill -TERM $ns 2>/dev/null' TERM")
	line(shq(nspawn) + " --quiet --directory=" + shq(root) + " --boot --volatile=overlay" +
		" --register=no --keep-unit --network-veth --console=read-only --setenv=SYSTEMD_COLORS=0 --machine=" + bootedMachine + " &")
	line("ns=$!")
	line(`while kill -0 $ns 2>/dev/null; do wait $ns; done`)

	proc, err := startNS(s.String(), bedEnv(), syscall.CLONE_NEWNET, filepath.Join(dir, "nspawn.log"))
	if err != nil {
		cg.remove()
		return nil, err
	}
	proc.cgroups = cg.dirs
	b := &BootedHost{Dir: dir, proc: proc, nsenter: nsenter}
	err = proc.waitReady(ctx, 90*time.Second, "booted container", func(ctx context.Context) error {
		if b.leader == 0 {
			n, l, err := bootedLeader(proc.pid())
			if err != nil {
				return err
			}
			b.nspawn, b.leader = n, l
		}
		out, err := b.Exec(ctx, "systemctl", "is-system-running")
		st := strings.TrimSpace(out)
		if st == "running" || st == "degraded" {
			return nil
		}
		return fmt.Errorf("is-system-running: %q (%v)", st, err)
	})
	if err != nil {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return b, nil
}

// bootedLeader finds the host PID of the container's PID 1: the child of
// systemd-nspawn, itself the child of the bed's init.
func bootedLeader(initPID int) (nspawn, leader int, err error) {
	ns := childPIDs(initPID)
	for _, n := range ns {
		if comm(n) != "systemd-nspawn" {
			continue
		}
		for _, l := range childPIDs(n) {
			if c := comm(l); c == "systemd" || c == "init" {
				return n, l, nil
			}
		}
	}
	return 0, 0, errors.New("container leader not started yet")
}

func comm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}

// childPIDs lists the processes whose parent is ppid (host PIDs).
func childPIDs(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			kids = append(kids, pid)
		}
	}
	return kids
}

// NewBootedHost boots a BootedHost for t (building the cached root first if
// it is missing, which takes about a minute) and registers its Close, then
// the removal of its temp dir, with t.Cleanup. Without mmdebstrap,
// systemd-nspawn or root the test fails when CI=true and is skipped
// otherwise.
func NewBootedHost(t testing.TB) *BootedHost {
	t.Helper()
	dir := bedTempDir(t, "tb-boot-")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := StartBootedHost(ctx, dir)
	if err != nil {
		unavailable(t, "a booted Debian in systemd-nspawn", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close booted host bed: %v", err)
		}
	})
	return b
}

// NSpawnPID is the host PID of systemd-nspawn.
func (b *BootedHost) NSpawnPID() int { return b.nspawn }

// LeaderPID is the host PID of the container's systemd (PID 1 inside).
func (b *BootedHost) LeaderPID() int { return b.leader }

// InitPID is the host PID of the bed's init, under which systemd-nspawn
// runs; Close signals it.
func (b *BootedHost) InitPID() int { return b.proc.pid() }

// Root is the container's root directory as the host sees it
// (/proc/LEADER/root): the overlay, writable, gone after Close.
func (b *BootedHost) Root() string { return "/proc/" + strconv.Itoa(b.leader) + "/root" }

// NetNSPath is the path of the container's network namespace (host0).
func (b *BootedHost) NetNSPath() string { return "/proc/" + strconv.Itoa(b.leader) + "/ns/net" }

// HostNetNSPath is the path of the bed's own network namespace, which holds
// ve-booted, the container's veth peer.
func (b *BootedHost) HostNetNSPath() string { return "/proc/" + strconv.Itoa(b.proc.pid()) + "/ns/net" }

// Command returns an unstarted command running argv inside the booted
// container (all its namespaces, its root, its cgroup).
func (b *BootedHost) Command(ctx context.Context, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.nsenter, b.containerArgs(argv)...)
	cmd.Env = bootedEnv
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (b *BootedHost) containerArgs(argv []string) []string {
	a := []string{"-t", strconv.Itoa(b.leader), "-a", "--"}
	return append(a, argv...)
}

// Exec runs argv inside the booted container and returns its combined
// output; the error includes it.
func (b *BootedHost) Exec(ctx context.Context, argv ...string) (string, error) {
	if b.leader == 0 {
		return "", errors.New("container not started")
	}
	return runOutput(ctx, bootedEnv, b.nsenter, b.containerArgs(argv)...)
}

// HostExec runs argv on the nspawn side: in the bed's network namespace
// (ve-booted) and mount namespace, not in the container.
func (b *BootedHost) HostExec(ctx context.Context, argv ...string) (string, error) {
	return runOutput(ctx, bedEnv(), b.nsenter, b.proc.nsenter(bootedFlags, argv)...)
}

// CopyIn copies the regular file hostPath to containerPath (absolute,
// inside the container), creating its parent directories, with hostPath's
// mode.
func (b *BootedHost) CopyIn(hostPath, containerPath string) error {
	if !filepath.IsAbs(containerPath) {
		return fmt.Errorf("container path %q is not absolute", containerPath)
	}
	st, err := os.Stat(hostPath)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(hostPath)
	if err != nil {
		return err
	}
	dst := filepath.Join(b.Root(), containerPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, data, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Chmod(dst, st.Mode().Perm())
}

// Close shuts the container down: SIGTERM to the bed's init, which passes
// it to systemd-nspawn, which makes systemd inside halt (under a second). If that takes more than 30 s it kills the init by PID, which
// kills every process of the bed. Then it removes the bed's cgroups. The
// overlay and every mount live in the bed's mount namespace and go with it.
// Files in Dir are left to the caller. It is idempotent.
func (b *BootedHost) Close() error {
	if b.proc.exitErr() == nil {
		_ = b.proc.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.proc.done:
		case <-time.After(30 * time.Second):
		}
	}
	return b.proc.close()
}
