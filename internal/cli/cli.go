// Package cli holds op-dbus's commands: flag parsing, output for people and
// for machines, exit codes. The work itself is the engine's.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Version is set at build time with -ldflags "-X .../internal/cli.Version=...".
var Version = "dev"

// Exit codes, as Terraform's -detailed-exitcode.
const (
	ExitOK      = 0
	ExitError   = 1
	ExitChanges = 2
	// ExitTempFail (EX_TEMPFAIL) asks the caller to try again later.
	ExitTempFail = 75
)

// exitError carries an exit code; a nil-message one only sets the code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func exitCode(code int) error { return &exitError{code: code} }

// globals are the flags every command shares.
type globals struct {
	stateDir string
	user     bool
	ovsdb    string
	output   string
	timeout  time.Duration
	noColor  bool

	snapshotKeep   int
	snapshotMaxAge time.Duration
	// confirmInProcess keeps a confirm deadline in this process only.
	confirmInProcess bool

	stdin          io.Reader
	stdout, stderr io.Writer
	// stdinTerminal: apply may ask its question; stdoutTerminal: output
	// may be colored. Run sets both from the real streams.
	stdinTerminal  bool
	stdoutTerminal bool
}

// Run executes op-dbus with args and returns the process exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	g.stdinTerminal = isTerminal(stdin)
	g.stdoutTerminal = isTerminal(stdout)
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "op-dbus: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "op-dbus: %v\n", err)
	return errkind.ExitCode(err)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "op-dbus",
		Short: "Declare what a Linux host should be, and make it so, safely",
		Long: `op-dbus treats a Linux host as one declarative state document.

It reads the live state through native interfaces, one plugin each (see
"op-dbus plugins"): systemd, hostname1, timedate1, locale1 and NetworkManager
over D-Bus, any property of any D-Bus object (the dbus plugin), links,
addresses and routes over netlink, Open vSwitch over OVSDB, and WireGuard.
It shows what would change, applies the changes in dependency order,
verifies the result and rolls back on failure.

A state document names only what it manages; everything else is left alone:

  {"version": 1,
   "plugins": {
     "systemd":  {"units": {"nginx.service": {"active_state": "active", "enabled": true}}},
     "hostname": {"static_hostname": "web1"}}}

Typical use:
  op-dbus query > now.json        capture the host as a state document
  op-dbus diff host.json          what apply would change (exit 2 when changes)
  op-dbus apply host.json         plan, confirm, apply, verify, roll back on failure
  op-dbus apply --confirm-within 60s host.json
                                  ... and roll back unless "op-dbus commit" follows
  op-dbus verify host.json        does the host match? (exit 2 lists mismatches)
  op-dbus rollback                undo the last apply
  op-dbus recover                 roll back a transaction whose process died
  op-dbus snapshot create         capture the whole host (list, diff, restore, prune)
  op-dbus history                 what changed when, from the tamper-evident audit log
  op-dbus introspect              everything on a D-Bus bus, with property values
  op-dbus check network           where netlink, NetworkManager, OVSDB and sysfs disagree
  op-dbus index build             a search index of the buses, plugin states, audit log
  op-dbus search "set the time zone"
                                  find anything on the host by meaning
  op-dbus serve --state host.json --mode enforce
                                  a daemon: drift reported or corrected, an HTTP API,
                                  org.opdbus1 on D-Bus, MCP over HTTP
  op-dbus mcp                     an MCP server on stdio for AI agents
  op-dbus nixos generate          a NixOS configuration from the live host

Exit codes: 0 in sync or applied, 2 changes present, 1 error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", "/var/lib/op-dbus", "directory for everything op-dbus writes: lock, journal, snapshots, audit log")
	pf.BoolVar(&g.user, "user", false, "manage the user's service manager on the session bus (like systemctl --user)")
	pf.StringVar(&g.ovsdb, "ovsdb", "unix:/var/run/openvswitch/db.sock", "ovsdb-server address for the ovs plugin: unix:PATH or tcp:HOST:PORT")
	pf.StringVarP(&g.output, "output", "o", "", "output format: text, json or yaml (query defaults to json)")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Minute, "give up on the whole command after this long")
	pf.BoolVar(&g.noColor, "no-color", false, "never color the output (NO_COLOR is honored too)")
	pf.IntVar(&g.snapshotKeep, "snapshot-keep", control.DefaultSnapshotKeep, "keep at most this many snapshots (0: no limit); pruned ones are recorded in the audit log")
	pf.DurationVar(&g.snapshotMaxAge, "snapshot-max-age", 0, "delete snapshots older than this, e.g. 2160h (0: keep)")
	pf.BoolVar(&g.confirmInProcess, "confirm-in-process", false, "keep a --confirm-within deadline in this process only (it dies with it); by default a systemd timer keeps it, and without systemd --confirm-within is refused")
	root.AddCommand(
		newQueryCmd(g), newDiffCmd(g), newApplyCmd(g), newVerifyCmd(g), newValidateCmd(g),
		newPluginsCmd(g), newSchemaCmd(g), newVersionCmd(g), newIntrospectCmd(g),
		newCommitCmd(g), newRollbackCmd(g), newSnapshotCmd(g), newAuditCmd(g), newHistoryCmd(g),
		newNixosCmd(g),
		newServeCmd(g),
		newMcpCmd(g),
		newCheckCmd(g),
		newRecoverCmd(g),
		newIndexCmd(g), newSearchCmd(g),
	)
	// The first command that reads or changes host state after a crash
	// finishes the interrupted transaction.
	for _, c := range root.Commands() {
		switch c.Name() {
		case "query", "diff", "verify", "apply", "rollback", "commit":
			c.PreRunE = func(*cobra.Command, []string) error { return g.recoverInterrupted() }
		case "snapshot", "nixos":
			for _, sc := range c.Commands() {
				if sc.Name() == "create" || sc.Name() == "restore" || sc.Name() == "generate" {
					sc.PreRunE = func(*cobra.Command, []string) error { return g.recoverInterrupted() }
				}
			}
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{ExitError, fmt.Errorf("%w (see `%s --help`)", err, c.CommandPath())}
	})
	return root
}

func versionString() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		v += " (" + bi.GoVersion + ")"
	}
	return "op-dbus " + v
}

// context returns the command's context: bounded by --timeout and cancelled
// by SIGINT/SIGTERM.
func (g *globals) context() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	return ctx, func() { cancel(); stop() }
}

// engine builds every registered plugin for these options.
func (g *globals) engine() (*engine.Engine, func()) {
	ps := plugin.New(plugin.Options{User: g.user, StateDir: g.stateDir, OVSDB: g.ovsdb})
	e := engine.New(ps)
	return e, func() {
		for _, p := range ps {
			if c, ok := p.(plugin.Closer); ok {
				_ = c.Close()
			}
		}
		// The plugins' (and watchers', and the D-Bus service's) one
		// connection per bus.
		_ = dbusx.CloseShared()
	}
}

func (g *globals) format(def string) (string, error) {
	f := g.output
	if f == "" {
		f = def
	}
	switch f {
	case "text", "json", "yaml":
		return f, nil
	}
	return "", &exitError{ExitError, fmt.Errorf("unknown output format %q (use text, json or yaml)", f)}
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the op-dbus version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			if f != "text" {
				return writeData(g.stdout, f, map[string]string{"version": Version, "go": goVersion()})
			}
			fmt.Fprintln(g.stdout, versionString())
			return nil
		},
	}
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return ""
}
