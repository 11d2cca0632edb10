package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/journallog"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/plugins/systemd"
	"github.com/op-dbus/op-dbus/internal/state"
)

const (
	propsIfc       = "org.freedesktop.DBus.Properties"
	systemdBus     = "org.freedesktop.systemd1"
	systemdPath    = dbus.ObjectPath("/org/freedesktop/systemd1")
	systemdManager = "org.freedesktop.systemd1.Manager"
)

// propObjects are the D-Bus objects of the property plugins; each emits
// PropertiesChanged on its own path when changed through its API.
var propObjects = map[string]struct {
	service string
	path    dbus.ObjectPath
}{
	"hostname": {"org.freedesktop.hostname1", "/org/freedesktop/hostname1"},
	"timedate": {"org.freedesktop.timedate1", "/org/freedesktop/timedate1"},
	"locale":   {"org.freedesktop.locale1", "/org/freedesktop/locale1"},
}

// watcher is one plugin's signal source on the process's shared
// connection to its bus.
type watcher struct {
	plugin string
	bus    dbusx.Bus
	// matches are the watcher's rules; its handler sees only signals that
	// pass one of them (the shared connection receives everyone's).
	matches []dbusx.Match
	// setup runs once the rules are in place (systemd's Subscribe); nil
	// for none.
	setup func(ctx context.Context, conn *dbus.Conn) error
	// relevant filters signals further; nil accepts all.
	relevant func(*dbus.Signal) bool
}

func (d *Daemon) startWatchers(ctx context.Context, doc *state.Document) {
	if d.opts.NoWatch {
		return
	}
	for _, n := range slices.Sorted(maps.Keys(doc.Plugins)) {
		w := d.watcherFor(n, doc.Plugins[n])
		var pw plugin.Watcher
		if w == nil {
			p, _ := d.eng.Plugin(n)
			if pw, _ = p.(plugin.Watcher); pw == nil {
				continue // no change source: the periodic reconcile covers it
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		d.watchers[n] = cancel
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if w != nil {
				d.watch(wctx, w)
			} else {
				d.watchPlugin(wctx, n, pw)
			}
		}()
	}
}

func (d *Daemon) stopWatchers() {
	for n, cancel := range d.watchers {
		cancel()
		delete(d.watchers, n)
	}
}

func (d *Daemon) watcherFor(name string, desired any) *watcher {
	if name == "systemd" {
		bus := dbusx.System
		if d.opts.User {
			bus = dbusx.Session
		}
		names, paths := unitsOf(desired)
		return &watcher{plugin: name, bus: bus,
			matches: []dbusx.Match{
				{Sender: systemdBus, PathNamespace: systemdPath, Interface: propsIfc, Member: "PropertiesChanged"},
				// JobRemoved, UnitNew, UnitRemoved, UnitFilesChanged, Reloading.
				{Sender: systemdBus, Path: systemdPath, Interface: systemdManager},
			},
			// Without Subscribe the manager emits no unit or job signals to us.
			setup:    systemd.ManagerSubscribe,
			relevant: func(s *dbus.Signal) bool { return systemdRelevant(s, names, paths) },
		}
	}
	if o, ok := propObjects[name]; ok {
		return &watcher{plugin: name, bus: dbusx.System,
			matches: []dbusx.Match{{Sender: o.service, Path: o.path, Interface: propsIfc, Member: "PropertiesChanged"}}}
	}
	return nil
}

// watch keeps the watcher's subscription on the shared connection, marks
// the plugin dirty for every relevant signal, and subscribes again (with
// backoff) on a new connection when the bus goes away. After each
// (re)subscription the plugin is marked dirty, since signals sent
// meanwhile are lost. When ctx ends it removes its rules and channel and
// leaves the connection to the others.
func (d *Daemon) watch(ctx context.Context, w *watcher) {
	backoff := 100 * time.Millisecond
	reported := false
	for ctx.Err() == nil {
		sub, err := d.subscribeWatcher(ctx, w)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !reported {
				d.logAt(journallog.Warning, journallog.Plugin(w.plugin), "watch %s: %v; retrying", w.plugin, err)
				reported = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		if reported {
			d.logAt(journallog.Info, journallog.Plugin(w.plugin), "watch %s: connected to the %s again", w.plugin, w.bus)
		}
		reported, backoff = false, 100*time.Millisecond
		d.Changed(w.plugin)
		select {
		case <-ctx.Done():
		case <-sub.Done():
		}
		_ = sub.Close()
		if ctx.Err() == nil {
			d.logAt(journallog.Warning, journallog.Plugin(w.plugin), "watch %s: lost the %s; reconnecting", w.plugin, w.bus)
			reported = true
		}
	}
}

// watchPlugin runs a plugin's own Watch (OVSDB monitor, netlink groups,
// NetworkManager signals) and calls it again with back-off when the source
// is lost.
func (d *Daemon) watchPlugin(ctx context.Context, name string, pw plugin.Watcher) {
	backoff := 100 * time.Millisecond
	var lost atomic.Bool
	for ctx.Err() == nil {
		started := time.Now()
		var once sync.Once
		err := pw.Watch(ctx, func() {
			once.Do(func() {
				if lost.Swap(false) {
					d.logAt(journallog.Info, journallog.Plugin(name), "watch %s: watching again", name)
				}
			})
			d.Changed(name)
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch ended")
		}
		if !lost.Swap(true) {
			d.logAt(journallog.Warning, journallog.Plugin(name), "watch %s: %v; retrying", name, err)
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond // it had been working
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// subscribeWatcher adds w's rules to the shared connection and marks the
// plugin dirty for each relevant signal, from the subscription's goroutine
// (Changed never blocks).
func (d *Daemon) subscribeWatcher(ctx context.Context, w *watcher) (*dbusx.Subscription, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := dbusx.Shared(cctx, w.bus)
	if err != nil {
		return nil, err
	}
	sub, err := dbusx.Subscribe(cctx, conn, func(s *dbus.Signal) {
		if w.relevant == nil || w.relevant(s) {
			d.Changed(w.plugin)
		}
	}, w.matches...)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if w.setup != nil {
		if err := w.setup(cctx, conn); err != nil {
			_ = sub.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	}
	return sub, nil
}

// systemdRelevant keeps the signals about the units the document names,
// and those that can change any unit (daemon reload, unit files changed).
func systemdRelevant(s *dbus.Signal, names map[string]bool, paths map[dbus.ObjectPath]bool) bool {
	switch s.Name {
	case propsIfc + ".PropertiesChanged":
		return paths[s.Path]
	case systemdManager + ".JobRemoved":
		if len(s.Body) >= 3 {
			if u, ok := s.Body[2].(string); ok {
				return names[u]
			}
		}
		return true
	case systemdManager + ".UnitNew", systemdManager + ".UnitRemoved":
		if len(s.Body) >= 1 {
			if u, ok := s.Body[0].(string); ok {
				return names[u]
			}
		}
		return true
	case systemdManager + ".JobNew":
		return false // the change shows in PropertiesChanged and JobRemoved
	}
	return true // Reloading, UnitFilesChanged, StartupFinished...
}

// unitsOf lists the unit names the systemd part of a document names, and
// their object paths.
func unitsOf(desired any) (map[string]bool, map[dbus.ObjectPath]bool) {
	names, paths := map[string]bool{}, map[dbus.ObjectPath]bool{}
	b, err := json.Marshal(desired)
	if err != nil {
		return names, paths
	}
	var st struct {
		Units map[string]json.RawMessage `json:"units"`
	}
	_ = json.Unmarshal(b, &st)
	for n := range st.Units {
		names[n] = true
		paths[unitPath(n)] = true
	}
	return names, paths
}

// unitPath is systemd's object path of a unit: bus_label_escape of the
// name (letters kept, digits kept except first, everything else _xx).
func unitPath(name string) dbus.ObjectPath {
	const hex = "0123456789abcdef"
	b := []byte(systemdPath + "/unit/")
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			b = append(b, c)
			continue
		}
		b = append(b, '_', hex[c>>4], hex[c&15])
	}
	return dbus.ObjectPath(b)
}
