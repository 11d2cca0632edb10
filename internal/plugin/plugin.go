// Package plugin defines the contract every op-dbus plugin implements and the
// registry plugins add themselves to. It holds interfaces and small value types
// only; the engine drives them.
package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/op-dbus/op-dbus/internal/state"
)

// Plugin owns one key under "plugins" in the state document.
//
// A plugin's state is a pointer to its own typed struct (what NewState
// returns). Query returns that type, Plan receives it. Plan is pure: it does
// no I/O, so it can run for diff, verify and rollback alike.
type Plugin interface {
	// Name is the key under "plugins" in the state document.
	Name() string
	// NewState returns a pointer to a zero value of the plugin's typed state,
	// used for strict decoding and schema generation.
	NewState() any
	// Available returns nil, or why the plugin cannot work on this host
	// (service absent, no permission).
	Available(ctx context.Context) error
	// Query reads the live state. Its result, marshalled as JSON, is itself
	// a valid desired state that plans zero ops against an unchanged host.
	Query(ctx context.Context) (any, error)
	// Plan returns the ops that turn current into desired. Only what desired
	// names is managed. Pure: no I/O.
	Plan(current, desired any) ([]Op, error)
	// Apply carries out one op. Idempotent where the backend allows.
	Apply(ctx context.Context, op Op) error
	// Subset returns the part of state that concerns the given items
	// (Op.Item values); rollback applies Subset(pre-apply state, touched).
	Subset(state any, items []string) any
	// After names plugins whose ops must all apply before this plugin's.
	After() []string
}

// Validator is implemented by plugins whose state has rules beyond its Go
// types (unit name syntax, value ranges). Each problem names its path below
// the plugin key, e.g. Path `units["a b.service"]`, Msg "invalid unit name".
type Validator interface {
	Validate(state any) state.Problems
}

// Scoped is implemented by plugins that can read only the items a desired
// state names, much faster than a full Query on a big host (systemd reads
// every unit file for a full query). For those items the result must equal
// what Query reports; the engine uses it for plan, verify and rollback.
type Scoped interface {
	QueryFor(ctx context.Context, desired any) (any, error)
}

// Prober is implemented by plugins whose state can declare checks beyond
// its fields, such as "10.99.0.2 answers ping" after addresses change: a
// host can match every declared field and still be cut off. Verification
// runs Probe after the fields match; each failed probe is a Change (Path
// names the probe, Desired what it expected, Current what it saw) and fails
// the verification, so the transaction rolls back. Probe returns an error
// only when it could not run the probes at all.
type Prober interface {
	Probe(ctx context.Context, desired any) ([]Change, error)
}

// Watcher is implemented by plugins whose source can tell of changes: an
// OVSDB monitor, netlink multicast groups, a service's D-Bus signals. The
// daemon uses it to re-query a plugin only when something changed.
//
// Watch blocks until ctx ends (then it returns nil) or the source is lost
// (then it returns why). It calls changed after every change that may
// concern the plugin's state; changed is cheap, never blocks, and may be
// called from more than one goroutine. Watch
// calls changed once as soon as it is subscribed, because changes made
// before (or while the source was away) were not seen. The daemon calls
// Watch again, with back-off, after an error.
type Watcher interface {
	Watch(ctx context.Context, changed func()) error
}

// Closer is implemented by plugins that hold connections.
type Closer interface {
	Close() error
}

// Op is one step of a plan.
type Op struct {
	// ID is stable for the same change: "systemd/start/nginx.service".
	ID string `json:"id"`
	// Plugin that produced and applies the op.
	Plugin string `json:"plugin"`
	// Item is the state item the op touches ("units/nginx.service",
	// "static_hostname"); rollback restores exactly the touched items.
	Item string `json:"item"`
	// Description is one line for people: "start nginx.service".
	Description string `json:"description"`
	// Data is the op's machine form, interpreted by the plugin's Apply.
	Data json.RawMessage `json:"data,omitempty"`
	// Reversible reports whether applying the item's previous state undoes it.
	Reversible bool `json:"reversible"`
	// DependsOn lists IDs of ops of the same plan that must finish first.
	// Ops with no path between them may run concurrently.
	DependsOn []string `json:"depends_on,omitempty"`
	// Field changes this op makes, for the plan display and verification.
	Changes []Change `json:"changes,omitempty"`
}

// Change is one field of one item: desired vs current.
type Change struct {
	Path    string `json:"path"`
	Current any    `json:"current"`
	Desired any    `json:"desired"`
}

func (c Change) String() string {
	return fmt.Sprintf("%s: desired %s, current %s", c.Path, Show(c.Desired), Show(c.Current))
}

// Show renders a value for people: JSON, or "(unset)" for nil.
func Show(v any) string {
	if v == nil {
		return "(unset)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// MustData marshals v for Op.Data; v is always a plugin's own plain struct,
// so a failure is a programming error.
func MustData(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("plugin: marshal op data: %v", err))
	}
	return b
}

// Factory builds a plugin for the given options.
type Factory func(Options) Plugin

// Options are the global settings a plugin may honor.
type Options struct {
	// User points bus-based plugins that have a per-user instance (systemd)
	// at the session bus instead of the system bus.
	User bool
	// StateDir is where op-dbus keeps its files.
	StateDir string
	// OVSDB is the ovsdb-server address for the ovs plugin
	// ("unix:/var/run/openvswitch/db.sock" when empty).
	OVSDB string
}

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
)

// Register adds a plugin factory under its name. Called from init.
func Register(name string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[name]; dup {
		panic("plugin: registered twice: " + name)
	}
	factories[name] = f
}

// Names returns the registered plugin names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Sorted(maps.Keys(factories))
}

// New builds every registered plugin, sorted by name.
func New(opts Options) []Plugin {
	mu.RLock()
	defer mu.RUnlock()
	names := slices.Sorted(maps.Keys(factories))
	out := make([]Plugin, 0, len(names))
	for _, n := range names {
		out = append(out, factories[n](opts))
	}
	return out
}
