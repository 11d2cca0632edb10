package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// OVS is Open vSwitch in a NetNS bed: ovsdb-server with a fresh
// Open_vSwitch database in Dir/conf.db, listening on Dir/db.sock, and
// (unless OVSDBOnly) ovs-vswitchd with the userspace datapath, so bridges
// with datapath_type=netdev become real devices inside the bed's network
// namespace (the kernel datapath module is not available). Both run in the
// foreground under the bed; closing the bed kills them with it.
type OVS struct {
	// NetNS is the bed the daemons run in: Exec `ip -j link` there to see
	// the devices ovs-vswitchd made.
	NetNS *NetNS
	// Dir holds conf.db, db.sock, the daemons' logs and control sockets.
	Dir string
	// DBAddress is the OVSDB address: "unix:DIR/db.sock". The socket is a
	// file in Dir, so processes outside the bed reach it too.
	DBAddress string
	// Vswitchd reports whether ovs-vswitchd runs.
	Vswitchd bool
}

// OVSOption configures StartOVS.
type OVSOption func(*ovsConfig)

type ovsConfig struct{ dbOnly bool }

// OVSDBOnly starts ovsdb-server alone, for pure OVSDB tests: nothing acts
// on the database, so Vsctl passes --no-wait.
func OVSDBOnly() OVSOption { return func(c *ovsConfig) { c.dbOnly = true } }

// OVSSchema is the Open_vSwitch schema openvswitch-switch installs.
const OVSSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// StartOVS starts an OVS bed whose files live in dir, an existing
// directory. It needs root and the Debian package openvswitch-switch.
func StartOVS(ctx context.Context, dir string, opts ...OVSOption) (*OVS, error) {
	var cfg ovsConfig
	for _, o := range opts {
		o(&cfg)
	}
	if err := needRoot(); err != nil {
		return nil, err
	}
	progs := []string{"ovsdb-tool", "ovsdb-server", "ovs-vsctl"}
	if !cfg.dbOnly {
		progs = append(progs, "ovs-vswitchd", "ovs-appctl")
	}
	for _, p := range progs {
		if _, err := needProgram(p, "openvswitch-switch"); err != nil {
			return nil, err
		}
	}
	if _, err := needFile("openvswitch-switch", OVSSchema); err != nil {
		return nil, err
	}
	dir, err := checkDir(dir, len("/vswitchd.ctl"))
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "conf.db")
	if _, err := runOutput(ctx, bedEnv(), "ovsdb-tool", "create", db, OVSSchema); err != nil {
		return nil, fmt.Errorf("create OVSDB: %w", err)
	}
	n, err := StartNetNS(ctx, dir)
	if err != nil {
		return nil, err
	}
	o := &OVS{NetNS: n, Dir: dir, DBAddress: "unix:" + filepath.Join(dir, "db.sock"), Vswitchd: !cfg.dbOnly}
	fail := func(err error) (*OVS, error) { return nil, errors.Join(err, n.Close()) }

	if err := o.startDB(ctx); err != nil {
		return fail(err)
	}
	if cfg.dbOnly {
		return o, nil
	}
	if _, err := n.Start("ovs-vswitchd", nil, "ovs-vswitchd", o.DBAddress,
		"--unixctl="+filepath.Join(dir, "vswitchd.ctl"),
		"--log-file="+filepath.Join(dir, "ovs-vswitchd.vlog"),
		"--pidfile="+filepath.Join(dir, "ovs-vswitchd.pid")); err != nil {
		return fail(err)
	}
	// Ready when it answers on its control socket and has configured
	// itself from the database: it fills Open_vSwitch.iface_types then
	// (from then on ovs-vsctl without --no-wait waits for it).
	err = n.proc.waitReady(ctx, 30*time.Second, "ovs-vswitchd", func(ctx context.Context) error {
		if _, err := n.Exec(ctx, "ovs-appctl", "-t", filepath.Join(dir, "vswitchd.ctl"), "version"); err != nil {
			return err
		}
		out, err := n.Exec(ctx, "ovs-vsctl", "--db="+o.DBAddress, "--no-wait", "--timeout=5", "get", "Open_vSwitch", ".", "iface_types")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "[]" {
			return errors.New("Open_vSwitch.iface_types is still empty")
		}
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("%w\novs-vswitchd log:\n%s", err, n.Log("ovs-vswitchd")))
	}
	return o, nil
}

// startDB starts ovsdb-server on Dir/conf.db and waits until it answers.
func (o *OVS) startDB(ctx context.Context) error {
	n, dir := o.NetNS, o.Dir
	if _, err := n.Start("ovsdb-server", nil, "ovsdb-server", filepath.Join(dir, "conf.db"),
		"--remote=punix:"+filepath.Join(dir, "db.sock"),
		"--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"),
		"--log-file="+filepath.Join(dir, "ovsdb-server.vlog"),
		"--pidfile="+filepath.Join(dir, "ovsdb-server.pid")); err != nil {
		return err
	}
	// Ready when the socket answers a transaction: init creates the
	// Open_vSwitch row (idempotent, so it can be retried).
	err := n.proc.waitReady(ctx, 20*time.Second, "ovsdb-server", func(ctx context.Context) error {
		if _, err := os.Stat(filepath.Join(dir, "db.sock")); err != nil {
			return err
		}
		_, err := n.Exec(ctx, "ovs-vsctl", "--db="+o.DBAddress, "--no-wait", "--timeout=5", "init")
		return err
	})
	if err != nil {
		return fmt.Errorf("%w\novsdb-server log:\n%s", err, n.Log("ovsdb-server"))
	}
	return nil
}

// RestartDB kills ovsdb-server (SIGKILL, by the PID in its pidfile, inside
// the bed) and starts it again on the same database and socket, as when
// the openvswitch-switch service restarts under its clients.
func (o *OVS) RestartDB(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(o.Dir, "ovsdb-server.pid"))
	if err != nil {
		return fmt.Errorf("ovsdb-server pidfile: %w", err)
	}
	pid := strings.TrimSpace(string(b))
	if out, err := o.NetNS.Exec(ctx, "kill", "-KILL", pid); err != nil {
		return fmt.Errorf("kill ovsdb-server %s: %w (%s)", pid, err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := o.NetNS.Exec(ctx, "kill", "-0", pid); err != nil {
			break // gone
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ovsdb-server %s still running 10s after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.Remove(filepath.Join(o.Dir, "db.sock"))
	_ = os.Remove(filepath.Join(o.Dir, "ovsdb-server.pid"))
	return o.startDB(ctx)
}

// NewOVS starts an OVS bed in a new temp dir for t and registers its Close
// (then the dir's removal) with t.Cleanup. If it cannot start, the test
// fails when CI=true and is skipped otherwise, naming the package.
func NewOVS(t testing.TB, opts ...OVSOption) *OVS {
	t.Helper()
	dir := bedTempDir(t, "tb-ovs-")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := StartOVS(ctx, dir, opts...)
	if err != nil {
		unavailable(t, "Open vSwitch (openvswitch-switch)", err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Errorf("close OVS bed: %v", err)
		}
	})
	return o
}

// Vsctl runs ovs-vsctl against the bed's database, inside the bed, and
// returns its output: the independent oracle. With OVSDBOnly it adds
// --no-wait (no ovs-vswitchd would ever catch up).
func (o *OVS) Vsctl(ctx context.Context, args ...string) (string, error) {
	argv := []string{"ovs-vsctl", "--db=" + o.DBAddress, "--timeout=20"}
	if !o.Vswitchd {
		argv = append(argv, "--no-wait")
	}
	return o.NetNS.Exec(ctx, append(argv, args...)...)
}

// Log returns the end of a daemon's log ("ovsdb-server", "ovs-vswitchd"):
// its own --log-file, then what it wrote to stderr.
func (o *OVS) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(o.Dir, name+".vlog"))
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b) + o.NetNS.Log(name)
}

// Close kills the bed (by its init's PID), and the daemons with it.
func (o *OVS) Close() error { return o.NetNS.Close() }
