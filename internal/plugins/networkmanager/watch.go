package networkmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

const (
	busIfc   = "org.freedesktop.DBus"
	busPath  = dbus.ObjectPath("/org/freedesktop/DBus")
	propsIfc = "org.freedesktop.DBus.Properties"
)

var _ plugin.Watcher = (*Plugin)(nil)

// watchMatches are the match rules Watch adds: NetworkManager's signals
// that can mean a profile, an active connection or a device changed, and
// NetworkManager (re)appearing on the bus or leaving it. A match on the
// well-known sender name follows whoever owns it, so the rules still hold
// after NetworkManager restarts.
var watchMatches = []dbusx.Match{
	// Any NetworkManager object's properties (watchRelevant keeps those of
	// the manager, Settings, profiles, active connections and devices).
	{Sender: busName, Interface: propsIfc, Member: "PropertiesChanged", PathNamespace: nmPath},
	// StateChanged, DeviceAdded, DeviceRemoved (and the legacy
	// PropertiesChanged) of the manager.
	{Sender: busName, Path: nmPath, Interface: nmIfc},
	// NewConnection, ConnectionRemoved.
	{Sender: busName, Path: settingsObj, Interface: settingsIfc},
	// Updated, Removed of each profile.
	{Sender: busName, Interface: connIfc, PathNamespace: settingsObj},
	// NetworkManager started, restarted or stopped.
	{Sender: busIfc, Path: busPath, Interface: busIfc, Member: "NameOwnerChanged", Arg0: busName},
}

// Watch implements plugin.Watcher: it follows NetworkManager's signals on
// the process's shared connection to the bus and calls changed once
// subscribed and after every signal that may concern profiles, active
// connections or devices, and when NetworkManager starts or stops. It
// returns nil when ctx ends and an error when the bus connection is lost;
// either way it removes its match rules and signal channel, and leaves the
// connection open for the others. NetworkManager need not be running: its
// appearance is a change. changed must not block.
func (p *Plugin) Watch(ctx context.Context, changed func()) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := dbusx.Shared(cctx, p.bus)
	if err != nil {
		return fmt.Errorf("watch NetworkManager: %w", err)
	}
	sub, err := dbusx.Subscribe(cctx, conn, func(s *dbus.Signal) {
		if watchRelevant(s) {
			changed()
		}
	}, watchMatches...)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch NetworkManager: subscribe to its signals on the %s: %w", p.bus, err)
	}
	defer sub.Close()
	cancel()
	changed()
	select {
	case <-ctx.Done():
		return nil
	case <-sub.Done():
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch NetworkManager: lost the connection to the %s", p.bus)
	}
}

// queriedIfaces are the interfaces whose properties Query reads: a
// PropertiesChanged of any other (IP4Config, DHCP4Config, AccessPoint
// signal strength, Device.Statistics counters, Device.Wireless scans) cannot
// change the state, and some of them change every few seconds.
var queriedIfaces = map[string]bool{
	nmIfc: true, settingsIfc: true, connIfc: true, activeIfc: true, deviceIfc: true,
}

// watchRelevant keeps the signals that may change what Query reports. The
// bus delivers only what watchMatches ask for, plus signals addressed to
// this connection (NameAcquired).
func watchRelevant(s *dbus.Signal) bool {
	if s == nil {
		return false
	}
	switch s.Name {
	case busIfc + ".NameOwnerChanged":
		return len(s.Body) > 0 && s.Body[0] == busName
	case propsIfc + ".PropertiesChanged":
		iface, _ := firstString(s.Body)
		return queriedIfaces[iface]
	case nmIfc + ".CheckPermissions":
		return false
	}
	// Anything else from the bus itself is about this connection;
	// everything else NetworkManager sends that matched counts.
	return s.Sender != busIfc
}

func firstString(body []any) (string, bool) {
	if len(body) == 0 {
		return "", false
	}
	v, ok := body[0].(string)
	return v, ok
}
