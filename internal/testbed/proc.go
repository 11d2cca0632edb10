package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every child of the test process is started by one goroutine locked to its
// own OS thread for the life of the process. Pdeathsig fires when the
// *thread* that forked the child exits, not the process; Go retires threads
// whose goroutine exits while locked (netns code does that), so a child
// forked on an arbitrary thread could be killed at a random moment. The
// spawner's thread never exits, so Pdeathsig=SIGKILL fires only when the
// test binary dies.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawner() {
	runtime.LockOSThread() // never unlocked: see above
	for r := range spawnReqs {
		r.done <- r.cmd.Start()
	}
}

// startCmd starts cmd with Pdeathsig=SIGKILL from the spawner thread.
func startCmd(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go spawner()
	})
	r := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnReqs <- r
	return <-r.done
}

// runOutput runs name with args and env and returns its combined output.
// The error, if any, includes the output.
func runOutput(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// nsenter -p forks; if ctx kills nsenter, its child may hold the pipe.
	cmd.WaitDelay = 5 * time.Second
	err := startCmd(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimRight(out.String(), "\n"))
	}
	return out.String(), nil
}

// nsProc is the init (PID 1) of a bed's namespaces: /bin/sh running a setup
// script that mounts what the bed needs and then waits for the daemons it
// started. Killing it kills every process of the PID namespace, whoever
// started them (daemons, activated services, units, nsenter'd commands).
type nsProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the init has been reaped
	waitErr error         // valid after done is closed

	cgroups []string // per-bed cgroups to remove after the processes are gone

	closeOnce sync.Once
	closeErr  error
}

// startNS starts script under sh as PID 1 of new namespaces (flags are
// CLONE_NEW* flags; CLONE_NEWPID and CLONE_NEWNS are always added), with its
// output appended to logPath.
func startNS(script string, env []string, flags uintptr, logPath string) (*nsProc, error) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return nil, &MissingError{What: "sh", Package: "dash"}
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(sh, "-c", script)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: flags | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Setsid:     true, // keep terminal signals (^C in `make demo`) away from the bed
	}
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("start namespace init: %w", err)
	}
	p := &nsProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the host PID of the namespace init.
func (p *nsProc) pid() int { return p.cmd.Process.Pid }

// exitErr returns a non-nil error if the init has exited.
func (p *nsProc) exitErr() error {
	select {
	case <-p.done:
		return fmt.Errorf("bed exited early (%v); log %s:\n%s", p.waitErr, p.logPath, p.logTail())
	default:
		return nil
	}
}

// logTail is the end of the bed's log, for error messages.
func (p *nsProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimRight(string(b), "\n")
}

// close kills the namespace init by PID (which makes the kernel kill every
// other process of the PID namespace), waits until it has been reaped (by
// then all of them are gone and the namespaces with their mounts are
// released), then removes the bed's cgroups. It is idempotent.
func (p *nsProc) close() error {
	p.closeOnce.Do(func() {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.closeErr = fmt.Errorf("kill bed init %d: %w", p.pid(), err)
		}
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.closeErr = fmt.Errorf("bed init %d did not exit 30s after SIGKILL", p.pid())
			return
		}
		for _, cg := range p.cgroups {
			if err := removeCgroupTree(cg, 5*time.Second); err != nil && p.closeErr == nil {
				p.closeErr = err
			}
		}
	})
	return p.closeErr
}

// waitReady polls check until it succeeds, the init exits, ctx ends or
// timeout passes.
func (p *nsProc) waitReady(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		if err := p.exitErr(); err != nil {
			return err
		}
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		ccancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %v (last: %v); log %s:\n%s", what, ctx.Err(), err, p.logPath, p.logTail())
		case <-p.done:
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay += 10 * time.Millisecond
		}
	}
}

// nsenter returns the nsenter arguments to run argv inside the bed.
func (p *nsProc) nsenter(nsFlags []string, argv []string) []string {
	a := []string{"-t", strconv.Itoa(p.pid())}
	a = append(a, nsFlags...)
	a = append(a, "--")
	return append(a, argv...)
}

// startLoggedIn starts nsenter with args (entering a bed to run a daemon in
// the foreground) in dir, with its output appended to dir/name.log, from the
// spawner thread (Pdeathsig). Without -p nsenter execs the daemon (the
// command's PID is the daemon's); with -p it forks and waits for it.
func startLoggedIn(dir, name string, env []string, nsenter string, args []string) (*exec.Cmd, error) {
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy once started
	cmd := exec.Command(nsenter, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := startCmd(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return cmd, nil
}

// MissingError reports a program or file the bed needs and the Debian
// package that provides it.
type MissingError struct {
	What    string // program or path
	Package string // Debian package
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s not found (install Debian package %s)", e.What, e.Package)
}

func needProgram(name, pkg string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", &MissingError{What: name, Package: pkg}
	}
	return p, nil
}

// needFile returns the first of paths that exists.
func needFile(pkg string, paths ...string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", &MissingError{What: paths[0], Package: pkg}
}

func needRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("the test bed needs root (mount, PID and UTS namespaces, cgroups)")
	}
	return nil
}

// shq quotes s for sh.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// bedEnv is os.Environ() without variables that would make the bed's
// daemons talk to whatever manages the test process, with set applied
// (KEY=VALUE entries replace existing KEYs).
func bedEnv(set ...string) []string {
	drop := map[string]bool{
		"NOTIFY_SOCKET": true, "LISTEN_PID": true, "LISTEN_FDS": true, "LISTEN_FDNAMES": true,
		"WATCHDOG_PID": true, "WATCHDOG_USEC": true, "INVOCATION_ID": true, "JOURNAL_STREAM": true,
		"MANAGERPID": true, "SYSTEMD_EXEC_PID": true, "DBUS_STARTER_ADDRESS": true, "DBUS_STARTER_BUS_TYPE": true,
	}
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		drop[k] = true
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	return append(env, set...)
}

// checkDir makes dir absolute and checks that it is a directory whose path
// is usable in mount options and short enough for the sockets below it.
func checkDir(dir string, longestSuffix int) (string, error) {
	if dir == "" {
		return "", errors.New("testbed: empty dir")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("testbed: %s is not a directory", abs)
	}
	if strings.ContainsAny(abs, ",:\\ \t\n'\"") {
		return "", fmt.Errorf("testbed: dir %q must not contain , : \\ quotes or spaces (used in mount options)", abs)
	}
	// sockaddr_un.sun_path holds 108 bytes including the NUL.
	if len(abs)+longestSuffix > 107 {
		return "", fmt.Errorf("testbed: dir %q is too long for unix socket paths below it (max %d bytes)", abs, 107-longestSuffix)
	}
	return abs, nil
}
