package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// Bus is a private dbus-daemon (session type, permissive policy, listening
// on a unix socket under Dir), for tests of our own D-Bus services and
// clients.
//
// Unlike the other beds it needs neither root nor namespaces: dbus-daemon
// runs as a plain child of the test process (Pdeathsig=SIGKILL, like every
// child), has no service directories (nothing is ever activated), and
// allows any user to connect, own any name and send anything. Its limits are
// those of Debian's session bus (messages up to 1e9 bytes, so the 128 MiB
// protocol maximum is the only real limit), not the 32 MiB default of a bare
// dbus-daemon. Its output goes to Dir/bus.log. Starting it takes 10-30 ms,
// Close about 2 ms.
type Bus struct {
	Dir     string
	Address string   // "unix:path=Dir/bus", for dbus.Connect or busctl --address
	Env     []string // os.Environ() with DBUS_SESSION_BUS_ADDRESS=Address

	cmd      *exec.Cmd
	logPath  string
	system   bool
	policies []string
	done     chan struct{} // closed when dbus-daemon has been reaped
	waitErr  error         // valid after done is closed

	closeOnce sync.Once
	closeErr  error
}

// StartBus starts dbus-daemon in dir, an existing directory, and returns
// once it answers Hello on Address, or fails after 20s.
func StartBus(ctx context.Context, dir string) (*Bus, error) {
	return startBus(ctx, dir, false, nil)
}

// StartSystemBus starts a bus like StartBus but with the system bus's
// default policy (Debian's system.conf: nobody may own names or send method
// calls unless a policy allows it) plus the given policy files, as
// /usr/share/dbus-1/system.d would add them. Dir is made world-searchable
// so unprivileged clients (setpriv) can reach the socket. Env sets
// DBUS_SYSTEM_BUS_ADDRESS.
func StartSystemBus(ctx context.Context, dir string, policies ...string) (*Bus, error) {
	return startBus(ctx, dir, true, policies)
}

func startBus(ctx context.Context, dir string, system bool, policies []string) (*Bus, error) {
	daemon, err := needProgram("dbus-daemon", "dbus")
	if err != nil {
		return nil, err
	}
	dir, err = checkDir(dir, len("/bus"))
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "bus")
	b := &Bus{
		Dir:     dir,
		Address: "unix:path=" + sock,
		logPath: filepath.Join(dir, "bus.log"),
		done:    make(chan struct{}),
		system:  system, policies: policies,
	}
	b.Env = bedEnv("DBUS_SESSION_BUS_ADDRESS=" + b.Address)
	text := sessionBusConf(sock)
	if system {
		b.Env = bedEnv("DBUS_SYSTEM_BUS_ADDRESS=" + b.Address)
		text, err = policyBusConf(sock, policies)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
	}
	_ = os.Remove(sock) // a restart on the same Dir after a kill
	conf := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	b.cmd = exec.Command(daemon, "--config-file="+conf, "--nofork", "--nopidfile", "--nosyslog")
	b.cmd.Env = bedEnv()
	b.cmd.Dir = "/"
	b.cmd.Stdout = logf
	b.cmd.Stderr = logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // keep ^C away, like the other beds
	if err := startCmd(b.cmd); err != nil {
		return nil, fmt.Errorf("start dbus-daemon: %w", err)
	}
	go func() {
		b.waitErr = b.cmd.Wait()
		close(b.done)
	}()
	if err := b.waitReady(ctx, 20*time.Second); err != nil {
		if cerr := b.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return b, nil
}

// waitReady polls until a client can connect and get a unique name.
func (b *Bus) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		select {
		case <-b.done:
			return fmt.Errorf("dbus-daemon exited early (%v); log %s:\n%s", b.waitErr, b.logPath, b.logTail())
		default:
		}
		err := b.ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dbus-daemon not ready: %v (last: %v); log %s:\n%s", ctx.Err(), err, b.logPath, b.logTail())
		case <-b.done:
		case <-time.After(delay):
		}
		if delay < 100*time.Millisecond {
			delay += 5 * time.Millisecond
		}
	}
}

func (b *Bus) ping(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(b.Dir, "bus")); err != nil {
		return err
	}
	conn, err := dbus.Connect(b.Address, dbus.WithContext(ctx)) // Auth + Hello
	if err != nil {
		return err
	}
	return conn.Close()
}

func (b *Bus) logTail() string {
	return (&nsProc{logPath: b.logPath}).logTail()
}

// NewSystemBus starts a StartSystemBus bus for t, like NewBus.
func NewSystemBus(t testing.TB, policies ...string) *Bus {
	t.Helper()
	return newBus(t, func(ctx context.Context, dir string) (*Bus, error) { return StartSystemBus(ctx, dir, policies...) })
}

// Restart kills the bus by PID and starts a new one on the same socket,
// as when the system bus restarts under a running daemon. The caller
// closes the new Bus (b's registered Close is then a no-op).
func (b *Bus) Restart(ctx context.Context) (*Bus, error) {
	if err := b.Close(); err != nil {
		return nil, err
	}
	nb, err := startBus(ctx, b.Dir, b.system, b.policies)
	if err != nil {
		return nil, err
	}
	return nb, nil
}

// NewBus starts a Bus in a new temp dir for t and registers its Close (then
// the dir's removal) with t.Cleanup. If the bus cannot be started, the test
// fails when CI=true and is skipped otherwise, naming the Debian package to
// install.
func NewBus(t testing.TB) *Bus {
	t.Helper()
	return newBus(t, StartBus)
}

func newBus(t testing.TB, start func(context.Context, string) (*Bus, error)) *Bus {
	t.Helper()
	dir := bedTempDir(t, "tb-bus-")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := start(ctx, dir)
	if err != nil {
		var me *MissingError
		switch {
		case os.Getenv("CI") == "true":
			t.Fatalf("testbed: cannot start dbus-daemon: %v", err)
		case errors.As(err, &me):
			t.Skipf("testbed: cannot start dbus-daemon: %v", err)
		default:
			t.Skipf("testbed: cannot start dbus-daemon (needs Debian package dbus): %v", err)
		}
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close bus: %v", err)
		}
	})
	return b
}

// Close kills dbus-daemon by PID and waits until it has been reaped. It is
// idempotent. Files in Dir are left to the caller.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			b.closeErr = fmt.Errorf("kill dbus-daemon %d: %w", b.cmd.Process.Pid, err)
		}
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			b.closeErr = fmt.Errorf("dbus-daemon %d did not exit 30s after SIGKILL", b.cmd.Process.Pid)
		}
	})
	return b.closeErr
}

// PID is the host PID of dbus-daemon.
func (b *Bus) PID() int { return b.cmd.Process.Pid }

// Busctl runs `busctl --address=Address ARGS` with Env. It returns the
// combined output; the error includes it.
func (b *Bus) Busctl(ctx context.Context, args ...string) (string, error) {
	return runOutput(ctx, b.Env, "busctl", append([]string{"--address=" + b.Address}, args...)...)
}

// policyBusConf is the default policy of Debian's system.conf, listening on
// sock, with the policy files included.
func policyBusConf(sock string, policies []string) (string, error) {
	var inc strings.Builder
	for _, p := range policies {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("bus policy file: %w", err)
		}
		inc.WriteString("  <include>" + xmlEscape(abs) + "</include>\n")
	}
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=` + xmlEscape(sock) + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
` + inc.String() + `</busconfig>
`, nil
}

// sessionBusConf is Debian's session.conf without service directories or
// includes, listening on sock only, with <allow user="*"/>.
func sessionBusConf(sock string) string {
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path=` + xmlEscape(sock) + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_incoming_unix_fds">250000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_outgoing_unix_fds">250000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="service_start_timeout">120000</limit>
  <limit name="auth_timeout">240000</limit>
  <limit name="pending_fd_timeout">150000</limit>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_pending_service_starts">10000</limit>
  <limit name="max_names_per_connection">50000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
`
}
