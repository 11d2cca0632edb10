package networkmanager

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

const (
	busName     = "org.freedesktop.NetworkManager"
	nmPath      = dbus.ObjectPath("/org/freedesktop/NetworkManager")
	settingsObj = dbus.ObjectPath("/org/freedesktop/NetworkManager/Settings")
	rootPath    = dbus.ObjectPath("/org/freedesktop") // NetworkManager's ObjectManager
	nmIfc       = "org.freedesktop.NetworkManager"
	settingsIfc = "org.freedesktop.NetworkManager.Settings"
	connIfc     = "org.freedesktop.NetworkManager.Settings.Connection"
	activeIfc   = "org.freedesktop.NetworkManager.Connection.Active"
	deviceIfc   = "org.freedesktop.NetworkManager.Device"
	ip4Ifc      = "org.freedesktop.NetworkManager.IP4Config"
	ip6Ifc      = "org.freedesktop.NetworkManager.IP6Config"
	objMgrIfc   = "org.freedesktop.DBus.ObjectManager"
)

// ActivationTimeout bounds the wait for one profile to activate or
// deactivate.
var ActivationTimeout = 60 * time.Second

func init() {
	plugin.Register("networkmanager", func(o plugin.Options) plugin.Plugin { return New(o) })
}

// Plugin is the networkmanager plugin.
type Plugin struct {
	bus dbusx.Bus

	mu      sync.Mutex
	conn    *dbus.Conn // the process's shared connection, never closed here
	sub     *dbusx.Subscription
	watch   *watcher
	txMu    sync.Mutex          // one transaction at a time
	deleted map[string]Settings // full settings of profiles this process deleted, by UUID
}

// New returns the plugin for NetworkManager on the system bus
// (DBUS_SYSTEM_BUS_ADDRESS when set).
func New(plugin.Options) *Plugin {
	return &Plugin{bus: dbusx.System, deleted: map[string]Settings{}}
}

// NewAt returns the plugin for NetworkManager on the bus at address.
func NewAt(address string) *Plugin {
	return &Plugin{bus: dbusx.Bus(address), deleted: map[string]Settings{}}
}

func (p *Plugin) Name() string    { return "networkmanager" }
func (p *Plugin) NewState() any   { return &State{} }
func (p *Plugin) After() []string { return nil }

// Close stops following active connections' StateChanged; the process's
// shared connection stays open for the others.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	if p.sub != nil {
		err = p.sub.Close()
	}
	p.conn, p.sub, p.watch = nil, nil, nil
	return err
}

// connect takes the process's shared connection to the bus once (again
// after the bus restarted) and starts following active connections'
// StateChanged signals.
func (p *Plugin) connect(ctx context.Context) (*dbus.Conn, *watcher, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.Connected() {
		return p.conn, p.watch, nil
	}
	if p.sub != nil { // the old connection is gone
		_ = p.sub.Close()
		p.conn, p.sub, p.watch = nil, nil, nil
	}
	conn, err := dbusx.Shared(ctx, p.bus)
	if err != nil {
		return nil, nil, err
	}
	ok, err := dbusx.HasName(ctx, conn, busName)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, fmt.Errorf("%s is not on the %s (is NetworkManager running? `systemctl start NetworkManager`; set DBUS_SYSTEM_BUS_ADDRESS for another bus)", busName, p.bus)
	}
	w := newWatcher()
	sub, err := dbusx.Subscribe(ctx, conn, w.signal, dbusx.Match{Interface: activeIfc, Member: "StateChanged"})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to active connection state changes: %w", err)
	}
	p.conn, p.sub, p.watch = conn, sub, w
	return conn, w, nil
}

// Available implements plugin.Plugin.
func (p *Plugin) Available(ctx context.Context) error {
	_, _, err := p.connect(ctx)
	return err
}

// objects is NetworkManager's ObjectManager view: path → interface →
// property → value.
type objects map[dbus.ObjectPath]map[string]map[string]dbus.Variant

// managedObjects reads every object's properties in one call.
func managedObjects(ctx context.Context, conn *dbus.Conn) (objects, error) {
	ctx, cancel := dbusx.WithTimeout(ctx)
	defer cancel()
	c := conn.Object(busName, rootPath).CallWithContext(ctx, objMgrIfc+".GetManagedObjects", 0)
	if c.Err != nil {
		return nil, fmt.Errorf("GetManagedObjects: %w", c.Err)
	}
	var objs objects
	if err := c.Store(&objs); err != nil {
		return nil, fmt.Errorf("GetManagedObjects: unexpected reply: %w", err)
	}
	return objs, nil
}

// NetworkManager's settings connection flags.
const (
	flagNMGenerated = 0x2
	flagExternal    = 0x8
)

// getSettings calls GetSettings on every path concurrently (pipelined over
// the one connection). Profiles that vanish meanwhile are left out.
func getSettings(ctx context.Context, conn *dbus.Conn, paths []dbus.ObjectPath) (map[dbus.ObjectPath]Settings, error) {
	ctx, cancel := dbusx.WithTimeout(ctx)
	defer cancel()
	calls := make([]*dbus.Call, len(paths))
	done := make(chan *dbus.Call, len(paths))
	for i, pth := range paths {
		calls[i] = conn.Object(busName, pth).GoWithContext(ctx, connIfc+".GetSettings", 0, done)
	}
	out := make(map[dbus.ObjectPath]Settings, len(paths))
	for i, c := range calls {
		<-c.Done
		if c.Err != nil {
			if dbusx.ErrorName(c.Err) == "org.freedesktop.DBus.Error.UnknownMethod" || dbusx.ErrorName(c.Err) == "org.freedesktop.DBus.Error.UnknownObject" {
				continue // deleted between listing and reading
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("GetSettings %s: no reply: %w", paths[i], ctx.Err())
			}
			return nil, fmt.Errorf("GetSettings %s: %w", paths[i], c.Err)
		}
		// Straight from the decoded body: Store's conversion would retype
		// the variants.
		s, ok := c.Body[0].(map[string]map[string]dbus.Variant)
		if len(c.Body) != 1 || !ok {
			return nil, fmt.Errorf("GetSettings %s: unexpected reply signature", paths[i])
		}
		out[paths[i]] = s
	}
	return out, nil
}

// snapshot is one consistent read of NetworkManager.
type snapshot struct {
	objs     objects
	settings map[dbus.ObjectPath]Settings // profiles (external/generated left out)
	byUUID   map[string]dbus.ObjectPath   // profile UUID → settings path
}

func (p *Plugin) read(ctx context.Context) (*snapshot, error) {
	conn, _, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := managedObjects(ctx, conn)
	if err != nil {
		return nil, err
	}
	var paths []dbus.ObjectPath
	for pth, ifs := range objs {
		props, ok := ifs[connIfc]
		if !ok {
			continue
		}
		if f, ok := props["Flags"].Value().(uint32); ok && f&(flagNMGenerated|flagExternal) != 0 {
			continue // NetworkManager's mirror of something configured outside it
		}
		paths = append(paths, pth)
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i] < paths[j] })
	settings, err := getSettings(ctx, conn, paths)
	if err != nil {
		return nil, err
	}
	sn := &snapshot{objs: objs, settings: settings, byUUID: map[string]dbus.ObjectPath{}}
	for pth, s := range settings {
		if u := str(s["connection"]["uuid"]); u != "" {
			sn.byUUID[strings.ToLower(u)] = pth
		}
	}
	return sn, nil
}

var activeStates = map[uint32]string{0: "unknown", 1: "activating", 2: "activated", 3: "deactivating", 4: "deactivated"}

// activeByUUID maps profile UUIDs to their active connection objects.
func (sn *snapshot) activeByUUID() map[string]dbus.ObjectPath {
	out := map[string]dbus.ObjectPath{}
	for pth, ifs := range sn.objs {
		if a, ok := ifs[activeIfc]; ok {
			if u := strings.ToLower(str(a["Uuid"])); u != "" {
				out[u] = pth
			}
		}
	}
	return out
}

// Query implements plugin.Plugin.
func (p *Plugin) Query(ctx context.Context) (any, error) {
	sn, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	return sn.state(), nil
}

func (sn *snapshot) state() *State {
	all := make([]Settings, 0, len(sn.settings))
	for _, s := range sn.settings {
		all = append(all, s)
	}
	st := &State{Connections: connectionsFromSettings(all), Devices: map[string]*Device{}}
	ifname := func(dev dbus.ObjectPath) string {
		return str(sn.objs[dev][deviceIfc]["Interface"])
	}
	// Active connections.
	for _, a := range sn.activeByUUID() {
		props := sn.objs[a][activeIfc]
		u := strings.ToLower(str(props["Uuid"]))
		state, _ := props["State"].Value().(uint32)
		devs, _ := props["Devices"].Value().([]dbus.ObjectPath)
		for _, c := range st.Connections {
			if strings.ToLower(c.UUID) != u {
				continue
			}
			c.ActiveState = activeStates[state]
			for _, d := range devs {
				if n := ifname(d); n != "" {
					c.Devices = append(c.Devices, n)
				}
			}
			sort.Strings(c.Devices)
		}
	}
	for _, c := range st.Connections {
		// Activating and deactivating are on their way somewhere: active
		// is left unset (not managed when the query is applied back).
		switch c.ActiveState {
		case "activated":
			t := true
			c.Active = &t
		case "", "deactivated", "unknown":
			f := false
			c.Active = &f
		}
		if c.Controller != nil && validUUID(*c.Controller) {
			n := normController(st, *c.Controller)
			c.Controller = &n
		}
	}
	// Devices.
	ctrlOf := map[dbus.ObjectPath]string{}
	for pth, ifs := range sn.objs {
		if d, ok := ifs[deviceIfc]; ok {
			ports, _ := d["Ports"].Value().([]dbus.ObjectPath)
			for _, port := range ports {
				ctrlOf[port] = ifname(pth)
			}
		}
	}
	for pth, ifs := range sn.objs {
		d, ok := ifs[deviceIfc]
		if !ok {
			continue
		}
		name := str(d["Interface"])
		if name == "" {
			continue
		}
		dt, _ := d["DeviceType"].Value().(uint32)
		ds, _ := d["State"].Value().(uint32)
		dev := &Device{Type: deviceType(dt), State: deviceState(ds), Controller: ctrlOf[pth]}
		dev.Managed, _ = d["Managed"].Value().(bool)
		dev.Real, _ = d["Real"].Value().(bool)
		dev.MTU, _ = d["Mtu"].Value().(uint32)
		if ac, ok := d["ActiveConnection"].Value().(dbus.ObjectPath); ok && ac != "/" {
			dev.Connection = str(sn.objs[ac][activeIfc]["Id"])
		}
		if prev, dup := st.Devices[name]; dup && prev.Real && !dev.Real {
			continue // a real device wins over an unrealized placeholder
		}
		st.Devices[name] = dev
	}
	return st
}

var deviceTypes = map[uint32]string{
	1: "ethernet", 2: "wifi", 5: "bluetooth", 6: "olpc-mesh", 7: "wimax", 8: "modem", 9: "infiniband",
	10: "bond", 11: "vlan", 12: "adsl", 13: "bridge", 14: "generic", 15: "team", 16: "tun", 17: "ip-tunnel",
	18: "macvlan", 19: "vxlan", 20: "veth", 21: "macsec", 22: "dummy", 23: "ppp", 24: "ovs-interface",
	25: "ovs-port", 26: "ovs-bridge", 27: "wpan", 28: "6lowpan", 29: "wireguard", 30: "wifi-p2p", 31: "vrf",
	32: "loopback", 33: "hsr",
}

func deviceType(t uint32) string {
	if s, ok := deviceTypes[t]; ok {
		return s
	}
	return fmt.Sprintf("type-%d", t)
}

var deviceStates = map[uint32]string{
	0: "unknown", 10: "unmanaged", 20: "unavailable", 30: "disconnected", 40: "prepare", 50: "config",
	60: "need-auth", 70: "ip-config", 80: "ip-check", 90: "secondaries", 100: "activated",
	110: "deactivating", 120: "failed",
}

func deviceState(s uint32) string {
	if n, ok := deviceStates[s]; ok {
		return n
	}
	return fmt.Sprintf("state-%d", s)
}
