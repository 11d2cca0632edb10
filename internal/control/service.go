// Package control is op-dbus's one transaction service. Every front end
// (the CLI, the daemon, the HTTP API, the D-Bus service, MCP, and later the
// fleet) is a thin adapter over it: it decodes its input, calls the
// service, and maps the service's typed errors (internal/errkind) to its
// own form. Locking, crash recovery, snapshot retention, audit-log repair
// reports, refusal records, plan hashes and the confirm deadline live here
// only.
//
// One Service holds one plugin set (one connection per source). A process
// that serves several front ends makes one Service and hands each front end
// a view of it with As(source): the views share plugins, the query cache
// and the state directory, and record their own source in the audit log.
package control

import (
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/journallog"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

// Options configure a Service.
type Options struct {
	StateDir string
	// Engine, when set, is the plugin set to use (shared with the caller,
	// who closes it). When nil, New builds every registered plugin from
	// User and OVSDB and Close closes them.
	Engine *engine.Engine
	// User points the systemd plugin at the session bus.
	User bool
	// OVSDB is the ovsdb-server address for the ovs plugin (see plugin.Options).
	OVSDB string
	// Source is recorded in the audit log: "cli", "api", "dbus", "mcp", "daemon".
	Source string
	// QueryCacheTTL, when set, serves Query from results at most this old.
	// The daemon sets it and calls Invalidate for every change signal, so
	// the cache is exact for what it watches and at most this stale for
	// the rest; plan and apply always read live.
	QueryCacheTTL time.Duration
	// SnapshotKeep and SnapshotMaxAge bound the snapshots kept after each
	// new one (0: no bound); pruned snapshots are recorded in the audit log.
	SnapshotKeep   int
	SnapshotMaxAge time.Duration
	// Deadlines holds confirm deadlines outside this process (a systemd
	// timer), so a deadline is honoured even if this process dies. Nil
	// keeps them in this process only.
	Deadlines Deadlines
	// Log receives one-line notices for people: an audit log repaired after
	// a crash, a recovered transaction, a btrfs snapshot.
	Log func(format string, args ...any)
	// Logger, if set, gets those notices with a priority and journal
	// fields (TXN=); Log then defaults to its Printf.
	Logger *journallog.Logger
}

// DefaultSnapshotKeep is the retention every front end uses unless told
// otherwise (--snapshot-keep).
const DefaultSnapshotKeep = 200

// Service is the transaction service. Create with New; give each front end
// its view with As.
type Service struct {
	*core
	source string
	owner  bool // the Service New returned; only it closes the plugins
}

type core struct {
	opts        Options
	dir         statedir.Dir
	engine      *engine.Engine
	ownsPlugins []plugin.Plugin

	mu    sync.Mutex
	plans map[planKey]*storedPlan

	cacheMu sync.Mutex
	cache   map[string]*cachedQuery
}

// New makes a Service.
func New(opts Options) *Service {
	if opts.Source == "" {
		opts.Source = "api"
	}
	if opts.Log == nil && opts.Logger != nil {
		opts.Log = opts.Logger.Printf
	}
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	c := &core{opts: opts, dir: statedir.New(opts.StateDir), engine: opts.Engine,
		plans: map[planKey]*storedPlan{}, cache: map[string]*cachedQuery{}}
	if c.engine == nil {
		c.ownsPlugins = plugin.New(plugin.Options{User: opts.User, StateDir: opts.StateDir, OVSDB: opts.OVSDB})
		c.engine = engine.New(c.ownsPlugins)
	}
	return &Service{core: c, source: opts.Source, owner: true}
}

// As returns a view of the service for another front end: the same
// plugins, cache and state directory; its own source in the audit log and
// its own plans (a plan is applied through the front end that made it).
func (s *Service) As(source string) *Service { return &Service{core: s.core, source: source} }

// Engine is the plugin set the service drives.
func (s *Service) Engine() *engine.Engine { return s.engine }

// StateDir is the state directory this service works in.
func (s *Service) StateDir() string { return s.dir.Path() }

// Dir is the state directory's layout.
func (s *Service) Dir() statedir.Dir { return s.dir }

// Close releases the plugins' connections if New built them. Views made
// with As close nothing.
func (s *Service) Close() error {
	if !s.owner {
		return nil
	}
	for _, p := range s.ownsPlugins {
		if c, ok := p.(plugin.Closer); ok {
			_ = c.Close()
		}
	}
	return nil
}
