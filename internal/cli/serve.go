package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/api"
	"github.com/op-dbus/op-dbus/internal/control"
	"github.com/op-dbus/op-dbus/internal/daemon"
	"github.com/op-dbus/op-dbus/internal/dbusservice"
	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/mcpserver"
)

type serveFlags struct {
	state       string
	mode        string
	interval    time.Duration
	debounce    time.Duration
	maxFailures int
	auditVerify time.Duration

	apiSocket     string
	apiSocketMode uint32
	apiListen     string
	apiTokenFile  string
	apiCert       string
	apiKey        string
	confirmWithin time.Duration
	maxBody       int64
	dbusBus       string
	mcp           bool
	mcpAllowApply bool
}

func newServeCmd(g *globals) *cobra.Command {
	var f serveFlags
	c := &cobra.Command{
		Use:   "serve --state FILE [--mode report|enforce]",
		Short: "Watch the host for drift from a state document (and correct it in enforce mode)",
		Long: `serve runs op-dbus as a daemon. It keeps the live state of what the
document names in view and learns of changes from the sources themselves,
not by polling, with one watcher per plugin the document names:

  systemd          systemd's D-Bus signals: PropertiesChanged of units and
                   the Manager's JobRemoved, UnitNew, UnitRemoved,
                   UnitFilesChanged, Reloading (the user's manager with --user)
  hostname, timedate, locale
                   PropertiesChanged of hostname1, timedate1 and locale1
  networkmanager   NetworkManager's D-Bus signals (devices, active
                   connections, profiles) and its restarts
  network          the rtnetlink groups of links, IPv4/IPv6 addresses and
                   IPv4/IPv6 routes
  ovs              an OVSDB monitor on Bridge, Port, Interface, Open_vSwitch

The dbus and wireguard plugins have no change source; the full reconcile
covers them. A change re-queries only the plugin it concerns (after
--debounce), and only the items the document names. If "op-dbus index build"
made a search index, the same events keep it current.

Drift is logged to stderr (the journal under systemd), counted (metrics and
GET /v1/drift when the API is on) and written to the audit log as kind
"drift". In enforce mode it is corrected as a transaction of kind
"correction" (journaled, verified, rolled back on failure); after repeated
failed corrections, or corrections undone again and again, the daemon backs
off and only reports.

A full reconcile runs every --interval as a backstop. SIGHUP or a changed
state file reloads the document; an invalid one is refused and the old one
kept. Under systemd (Type=notify) it sends READY=1 and WATCHDOG=1.

With -o json, every event is also one JSON object per line on stdout:
  {"event":"drift","plugin":"systemd","items":1,"latency_ms":3.1,...}

The HTTP API is off unless asked for: it is served on the unix socket
--api-socket (/run/op-dbus/api.sock when only --api-listen is given) and, with
--api-listen, on TCP behind the bearer token of --api-token-file (TLS with
--api-tls-cert and --api-tls-key). See docs/api.md.
With --mcp the same listeners serve MCP over streamable HTTP at /mcp, under
the same token: read-only unless --mcp-allow-apply, and then every apply
waits for "op-dbus commit" (--confirm-within, 2m by default for MCP; the
deadline is kept by a systemd timer, or with --confirm-in-process by the
daemon alone).

On D-Bus (--dbus, the system bus by default) the daemon owns org.opdbus1:
methods Query, Plan and Apply (a plan hash from Plan, refused when stale),
properties Mode and DriftCount, signals StateChanged, DriftDetected and
Applied. dist/org.opdbus1.conf is the bus policy (only root may Apply). When
the bus restarts, the daemon reconnects by itself.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			return g.recoverInterrupted()
		},
		RunE: func(*cobra.Command, []string) error { return runServe(g, &f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.state, "state", "", "the desired state document (JSON or YAML) (required)")
	fl.StringVar(&f.mode, "mode", daemon.ModeReport, "report: only report drift; enforce: also correct it")
	fl.DurationVar(&f.interval, "interval", 5*time.Minute, "full reconcile every this long, as a backstop to the signals")
	fl.DurationVar(&f.debounce, "debounce", 50*time.Millisecond, "gather a plugin's change signals this long before re-querying it")
	fl.DurationVar(&f.auditVerify, "audit-verify-interval", time.Hour, "re-verify the whole audit log this often (also at start; a damaged log stops every change); negative: never")
	fl.IntVar(&f.maxFailures, "max-failures", 3, "enforce: back off after this many failed corrections of a plugin in a row")
	fl.StringVar(&f.apiSocket, "api-socket", "", "serve the HTTP API on this unix socket (e.g. /run/op-dbus/api.sock); off when empty")
	fl.Uint32Var(&f.apiSocketMode, "api-socket-mode", 0o660, "file mode of the API socket, e.g. 0640 (octal with a leading 0; the default 0660 shows as 432)")
	fl.StringVar(&f.apiListen, "api-listen", "", "also serve the API on this TCP host:port (needs --api-token-file)")
	fl.StringVar(&f.apiTokenFile, "api-token-file", "", "bearer token file for the TCP API")
	fl.StringVar(&f.apiCert, "api-tls-cert", "", "TLS certificate for the TCP API")
	fl.StringVar(&f.apiKey, "api-tls-key", "", "TLS key for the TCP API")
	fl.DurationVar(&f.confirmWithin, "confirm-within", 0, "applies through the API, D-Bus and MCP wait this long for an op-dbus commit before rolling back (0: no confirmation; MCP always waits, 2m by default)")
	fl.StringVar(&f.dbusBus, "dbus", "system", "own org.opdbus1 on this bus: system, session, a D-Bus address, or none")
	fl.BoolVar(&f.mcp, "mcp", false, "also serve MCP (streamable HTTP) at /mcp on the API's listeners, under the same token")
	fl.BoolVar(&f.mcpAllowApply, "mcp-allow-apply", false, "let MCP clients apply plans they made (always under the confirm timer, --confirm-within or 2m)")
	fl.Int64Var(&f.maxBody, "max-body", 0, "API request body limit in bytes (0: the API's default)")
	return c
}

func runServe(g *globals, f *serveFlags) error {
	if f.state == "" {
		return &exitError{ExitError, errors.New("serve needs the desired state: pass --state FILE")}
	}
	format, err := g.format("text")
	if err != nil {
		return err
	}
	if format == "yaml" {
		return &exitError{ExitError, errors.New("serve writes events as JSON lines: use -o json or -o text")}
	}
	// Not g.context(): a daemon has no --timeout.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// One plugin set, so one connection per source (bus, netlink, OVSDB)
	// for the whole process, and one transaction service over it. The
	// daemon, the API, MCP, the D-Bus service and the search index keeper
	// each get a view of that service with their own audit-log source.
	// Reads go through a short-lived cache that every change signal the
	// daemon receives invalidates: exact for what it watches, at most a
	// second old for the rest; plan and apply always read live.
	e, done := g.engine()
	defer done()
	lg := g.logger()
	logf := lg.Printf
	sopts := g.serviceOptions(e, "daemon")
	sopts.QueryCacheTTL = time.Second
	svc := control.New(sopts)
	defer svc.Close()
	opts := daemon.Options{StatePath: f.state, StateDir: g.stateDir, Mode: f.mode, User: g.user,
		Interval: f.interval, Debounce: f.debounce, MaxFailures: f.maxFailures, AuditVerify: f.auditVerify, Log: logf, Logger: lg}
	if format == "json" {
		opts.Events = g.stdout
	}
	apiOn := f.apiSocket != "" || f.apiListen != ""
	dbusOn := f.dbusBus != "none" && f.dbusBus != ""
	if (f.mcp || f.mcpAllowApply) && !apiOn {
		return &exitError{ExitError, errors.New("--mcp serves MCP on the API's listeners: give --api-socket (and/or --api-listen with --api-token-file) too")}
	}
	listeners := fanout{invalidator{svc}}
	var metrics *api.Metrics
	if apiOn {
		metrics = api.NewMetrics(nil)
		listeners = append(listeners, metrics)
	}
	if dbusOn {
		bus := dbusx.Bus(f.dbusBus)
		if _, err := bus.Address(); err != nil {
			return &exitError{ExitError, fmt.Errorf("--dbus: %w", err)}
		}
		kctx, kcancel := context.WithCancel(ctx)
		// The name owner shares the process's connection to that bus with
		// the plugins and watchers. Before that connection is closed (done
		// above), it releases the name.
		k := dbusservice.Keep(kctx, func(ctx context.Context) (*dbus.Conn, error) { return dbusx.Shared(ctx, bus) },
			svc.As("dbus"), dbusservice.Options{Mode: f.mode, ConfirmWithin: f.confirmWithin, Log: logf})
		defer func() {
			kcancel()
			select {
			case <-k.Done():
			case <-time.After(10 * time.Second):
			}
		}()
		listeners = append(listeners, dbusSink{k})
	}
	// The search index of the state directory, if one was built, is kept
	// current from the same events, read through the same plugins.
	ik := newIndexKeeper(g, e, logf)
	listeners = append(listeners, ik)
	opts.Listener = listeners
	d, err := daemon.New(svc.As("daemon"), opts)
	if err != nil {
		return &exitError{ExitError, err}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				d.Reload()
			}
		}
	}()

	apiErr := make(chan error, 1)
	if apiOn {
		aopts := api.Options{Drift: driftStatus{d}, Metrics: metrics, MaxBody: f.maxBody,
			ConfirmWithin: f.confirmWithin, StateDir: g.stateDir}
		if f.mcp {
			msrv := mcpserver.New(svc.As("mcp"), mcpserver.Options{AllowApply: f.mcpAllowApply, ConfirmWithin: f.confirmWithin, Version: Version})
			aopts.MCP = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return msrv.MCP() },
				&mcp.StreamableHTTPOptions{SessionTimeout: 30 * time.Minute, MaxRequestBodyBytes: api.DefaultMaxBody})
		}
		h := api.NewHandler(svc.As("api"), aopts)
		lo := api.ListenOptions{Socket: f.apiSocket, Mode: os.FileMode(f.apiSocketMode), TCP: f.apiListen,
			TokenFile: f.apiTokenFile, CertFile: f.apiCert, KeyFile: f.apiKey}
		go func() {
			err := api.Serve(ctx, h, lo)
			if err != nil && ctx.Err() == nil {
				apiErr <- err
				cancel()
			}
			close(apiErr)
		}()
	} else {
		close(apiErr)
	}
	ikDone := make(chan struct{})
	go func() {
		defer close(ikDone)
		ik.run(ctx)
	}()
	err = d.Run(ctx)
	cancel()
	d.Wait()
	<-ikDone
	if aerr := <-apiErr; aerr != nil {
		return &exitError{ExitError, fmt.Errorf("api: %w", aerr)}
	}
	if err != nil {
		return &exitError{ExitError, err}
	}
	return nil
}

// driftStatus shows the daemon's drift to the API.
type driftStatus struct{ d *daemon.Daemon }

func (s driftStatus) Status() api.DriftStatus {
	st := s.d.Status()
	return api.DriftStatus{Mode: st.Mode, Items: st.Items, LastCheck: st.LastCheck}
}

// fanout passes the daemon's events to every listener.
type fanout []daemon.Listener

func (f fanout) SetDrift(plugin string, n int) {
	for _, m := range f {
		m.SetDrift(plugin, n)
	}
}

func (f fanout) Event(source string) {
	for _, m := range f {
		m.Event(source)
	}
}

func (f fanout) Applied(result, source string, d time.Duration) {
	for _, m := range f {
		m.Applied(result, source, d)
	}
}

// invalidator drops the cached state of a plugin whenever the daemon hears
// that it changed.
type invalidator struct{ svc *control.Service }

func (m invalidator) Event(source string)                 { m.svc.Invalidate(source) }
func (invalidator) SetDrift(string, int)                  {}
func (invalidator) Applied(string, string, time.Duration) {}

// dbusSink turns the daemon's events into org.opdbus1 signals. Corrections
// have no plan hash: Applied carries "".
type dbusSink struct{ k *dbusservice.Keeper }

func (s dbusSink) Event(source string)           { s.k.StateChanged(source) }
func (s dbusSink) SetDrift(plugin string, n int) { s.k.SetDrift(plugin, n) }
func (s dbusSink) Applied(result, source string, _ time.Duration) {
	s.k.Applied("", result == "success", source)
}
