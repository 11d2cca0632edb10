package search

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
)

// Sources names what Gather reads. What is left nil is not read.
//
// Gather is the one place that turns the host's sources into documents:
// `index build` and `index update`, the index `serve` keeps current and
// the MCP search tool all call it, each with the readers it has (an
// engine of its own, a control service, the state directory).
type Sources struct {
	// Buses are walked in order, each over a connection of its own.
	Buses []Bus
	// Plugins reads plugin states (EngineStates reads them through an
	// engine).
	Plugins PluginStates
	// Audit reads audit log entries (AuditLogAt reads a state directory's
	// log).
	Audit AuditEntries
	// Flags are the global flags an open command needs to find the same
	// thing again ("--state-dir=/x --user").
	Flags string
	// Log, when set, is told what is read and what is not indexed (one
	// line each, without a trailing newline).
	Log func(format string, args ...any)
}

// Bus is one D-Bus bus to walk.
type Bus struct {
	// Name is system, session or a D-Bus address. It is the BUS of the
	// documents' IDs and sources (dbus/BUS/SERVICE...), so the documents
	// of two buses never collide.
	Name string
	// Services restricts the walk (empty: every service).
	Services []string
	// Activatable also walks activatable services that do not run (this
	// starts them).
	Activatable bool
	// CallTimeout bounds one D-Bus call of the walk (0: the walker's
	// default).
	CallTimeout time.Duration
	// Optional: a bus that cannot be reached (no address, no answer
	// within ConnectTimeout, the walk fails) is reported in
	// Gathered.Buses as skipped instead of failing Gather.
	Optional bool
	// ConnectTimeout bounds connecting (0: the context's deadline).
	ConnectTimeout time.Duration
	// Walk, when set, walks the bus instead of a connection opened here
	// (the MCP server walks through its control service).
	Walk func(ctx context.Context, b Bus) (*introspect.Result, error)
}

// PluginStates reads plugins' live states: the states read, the plugins
// that could not be read (unavailable here) and why, or an error that
// nothing could be read.
type PluginStates func(ctx context.Context) (states map[string]any, failed map[string]error, err error)

// AuditEntries reads audit log entries.
type AuditEntries func() ([]ledger.Entry, error)

// BusReport says what became of one bus of Sources.Buses.
type BusReport struct {
	Bus string `json:"bus"`
	// Services is how many services were indexed.
	Services int `json:"services"`
	// Documents is how many documents they made.
	Documents int `json:"documents"`
	// Skipped says why an optional bus was not read ("" when it was).
	Skipped string `json:"skipped,omitempty"`
}

// Gathered is what Gather read.
type Gathered struct {
	// Docs are the documents by source (see Document.Source). A service
	// that could not be walked has a nil entry: its documents are gone.
	// Sources of a skipped bus are absent.
	Docs map[string][]Document
	// Buses reports each bus of Sources.Buses, in order.
	Buses []BusReport
	// PluginErrors are the plugins whose state could not be read.
	PluginErrors map[string]error
}

// Gather reads the sources and makes their documents, grouped by source.
func Gather(ctx context.Context, s Sources) (*Gathered, error) {
	logf := s.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	out := &Gathered{Docs: map[string][]Document{}}
	for _, b := range s.Buses {
		rep, err := gatherBus(ctx, b, out.Docs, logf)
		if err != nil {
			if !b.Optional || ctx.Err() != nil {
				return nil, err
			}
			rep.Skipped = err.Error()
		}
		out.Buses = append(out.Buses, rep)
	}
	if s.Plugins != nil {
		logf("reading the plugin states...")
		states, failed, err := s.Plugins(ctx)
		if err != nil {
			return nil, err
		}
		out.PluginErrors = failed
		names := make([]string, 0, len(states))
		for n := range states {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			docs, err := FromPluginState(n, states[n], s.Flags)
			if err != nil {
				return nil, err
			}
			out.Docs[StateSource(n)] = docs
		}
	}
	if s.Audit != nil {
		es, err := s.Audit()
		if err != nil {
			return nil, err
		}
		out.Docs[AuditSource] = FromAudit(es, s.Flags)
	}
	return out, nil
}

// gatherBus walks one bus into docs. Its documents go into docs only when
// the whole walk succeeded, so a skipped bus leaves no trace.
func gatherBus(ctx context.Context, b Bus, docs map[string][]Document, logf func(string, ...any)) (BusReport, error) {
	rep := BusReport{Bus: b.Name}
	logf("walking the %s...", dbusx.Bus(b.Name))
	walk := b.Walk
	if walk == nil {
		walk = walkBus
	}
	res, err := walk(ctx, b)
	if err != nil {
		return rep, fmt.Errorf("introspect %s: %w", b.Name, err)
	}
	for i := range res.Services {
		sv := &res.Services[i]
		src := DBusSource(b.Name, sv.Name)
		switch {
		case sv.Error != "":
			logf("%s: %s: %s (not indexed)", b.Name, sv.Name, sv.Error)
			docs[src] = nil
		case sv.NotWalked:
			docs[src] = nil
		default:
			d := ServiceDocuments(b.Name, sv)
			docs[src] = d
			rep.Services++
			rep.Documents += len(d)
		}
	}
	return rep, nil
}

// walkBus connects to the bus (within ConnectTimeout) and walks it.
func walkBus(ctx context.Context, b Bus) (*introspect.Result, error) {
	cctx := ctx
	if b.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, b.ConnectTimeout)
		defer cancel()
	}
	conn, err := dbusx.Open(cctx, dbusx.Bus(b.Name))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	w := &introspect.Walker{Conn: conn, Bus: b.Name, Services: b.Services, Activatable: b.Activatable, CallTimeout: b.CallTimeout}
	return w.Walk(ctx)
}

// EngineStates reads the named plugins' states through e (all plugins when
// none are named); a plugin that is not available here is in failed.
func EngineStates(e *engine.Engine, names ...string) PluginStates {
	return func(ctx context.Context) (map[string]any, map[string]error, error) {
		states, failed := map[string]any{}, map[string]error{}
		for n, r := range e.Query(ctx, names) {
			if r.Err != nil {
				failed[n] = r.Err
				continue
			}
			states[n] = r.State
		}
		return states, failed, nil
	}
}

// AuditLogAt reads every entry of the audit log in dir (STATE-DIR/audit);
// none when no log has been written there yet.
func AuditLogAt(dir string) AuditEntries {
	return func() ([]ledger.Entry, error) {
		es, _, err := ReadAudit(dir, 0)
		return es, err
	}
}

// ReadAudit reads the entries of the audit log in dir from seq from on,
// and the seq to read from next time. Without a log it reads nothing (and
// creates none).
func ReadAudit(dir string, from uint64) (es []ledger.Entry, next uint64, err error) {
	if !ledger.Exists(dir) {
		return nil, from, nil
	}
	l, err := ledger.Open(dir)
	if err != nil {
		return nil, from, err
	}
	defer l.Close()
	es, err = l.Entries(from, nil)
	if err != nil {
		return nil, from, err
	}
	next = from
	if len(es) > 0 {
		next = es[len(es)-1].Seq + 1
	}
	return es, next, nil
}

// AuditSize is the number of entries of the audit log in dir (0 without
// one).
func AuditSize(dir string) uint64 {
	if !ledger.Exists(dir) {
		return 0
	}
	l, err := ledger.Open(dir)
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Size()
}

// BusOfSource is the bus of a D-Bus source ("dbus/BUS/SERVICE"); ok is
// false for other sources. A bus given as an address keeps its slashes:
// the service, which has none, is what follows the last one.
func BusOfSource(source string) (bus string, ok bool) {
	rest, ok := strings.CutPrefix(source, "dbus/")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}
