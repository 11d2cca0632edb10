package networkmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

// CheckpointCreate flags.
const (
	cpDeleteNewConnections = 0x02
	cpDisconnectNewDevices = 0x04
)

// Settings AddConnection2 / Update2 flags.
const (
	saveToDisk       = 0x1
	blockAutoconnect = 0x20
)

// RollbackTimeout bounds the rollback after a failed step.
var RollbackTimeout = 2 * time.Minute

// Apply implements plugin.Plugin: it runs the transaction op inside one
// NetworkManager checkpoint (see README.md).
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	if op.ID != TransactionID {
		return fmt.Errorf("unknown op %q", op.ID)
	}
	var data opData
	if err := json.Unmarshal(op.Data, &data); err != nil {
		return fmt.Errorf("op data: %w", err)
	}
	if len(data.Steps) == 0 {
		return nil
	}
	p.txMu.Lock()
	defer p.txMu.Unlock()
	conn, w, err := p.connect(ctx)
	if err != nil {
		return err
	}
	tx := &tx{p: p, conn: conn, w: w, steps: data.Steps}
	return tx.run(ctx)
}

type tx struct {
	p     *Plugin
	conn  *dbus.Conn
	w     *watcher
	steps []step

	before       map[string]Settings // touched UUID → full settings before (absent: did not exist)
	activeBefore map[string]string   // UUID → id of every profile activated before
	cp           dbus.ObjectPath
}

func (t *tx) nm() dbus.BusObject { return t.conn.Object(busName, nmPath) }

func (t *tx) run(ctx context.Context) error {
	sn, err := t.p.read(ctx)
	if err != nil {
		return err
	}
	t.before = map[string]Settings{}
	t.activeBefore = map[string]string{}
	for u, ac := range sn.activeByUUID() {
		if t.stateOf(sn, ac) == 2 {
			t.activeBefore[u] = str(sn.objs[ac][activeIfc]["Id"])
		}
	}
	for _, s := range t.steps {
		if pth, ok := sn.byUUID[strings.ToLower(s.UUID)]; ok {
			t.before[strings.ToLower(s.UUID)] = sn.settings[pth]
		}
	}
	timeout := 60*time.Second + time.Duration(len(t.steps))*ActivationTimeout
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".CheckpointCreate", []any{&t.cp},
		[]dbus.ObjectPath{}, uint32(timeout/time.Second), uint32(cpDeleteNewConnections|cpDisconnectNewDevices)); err != nil {
		return fmt.Errorf("create checkpoint (nothing was changed): %w%s", err, checkpointHint(err))
	}
	if err := t.steps3(ctx, sn); err != nil {
		return t.rollback(ctx, err)
	}
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".CheckpointDestroy", nil, t.cp); err != nil {
		// The changes are made and verified, but NetworkManager will roll
		// them back when the checkpoint times out: fail so the engine
		// knows, and roll back now rather than later.
		return t.rollback(ctx, fmt.Errorf("destroy checkpoint %s: %w", t.cp, err))
	}
	return nil
}

func checkpointHint(err error) string {
	if strings.Contains(err.Error(), "checkpoint") {
		return " (another checkpoint covers these devices: nmstate, nmcli or an interrupted op-dbus run; it rolls back by itself when its timeout ends. The Checkpoints property of /org/freedesktop/NetworkManager lists them)"
	}
	if dbusx.IsAccessDenied(err) {
		return " (run as root, or grant org.freedesktop.NetworkManager.checkpoint-rollback in polkit)"
	}
	return ""
}

// steps3 runs the steps in three phases: deactivations and deletions;
// adds and updates (controllers before ports); activations (controllers
// before ports), each waited for.
func (t *tx) steps3(ctx context.Context, sn *snapshot) error {
	active := sn.activeByUUID()
	for _, s := range t.steps {
		uuid := strings.ToLower(s.UUID)
		switch {
		case s.Action == actDelete:
			pth, ok := sn.byUUID[uuid]
			if !ok {
				continue // already gone
			}
			t.p.mu.Lock()
			t.p.deleted[uuid] = sn.settings[pth]
			t.p.mu.Unlock()
			if err := dbusx.Call(ctx, t.conn.Object(busName, pth), connIfc+".Delete", nil); err != nil {
				return fmt.Errorf("delete connection %q (%s): %w", s.Key, s.UUID, err)
			}
		case s.Deactivate:
			ac, ok := active[uuid]
			if !ok {
				continue
			}
			if err := t.deactivate(ctx, s.Key, ac); err != nil {
				return err
			}
		}
	}
	paths := map[string]dbus.ObjectPath{}
	for _, port := range []bool{false, true} {
		for _, s := range t.steps {
			if s.Port != port || (s.Action != actAdd && s.Action != actUpdate) {
				continue
			}
			pth, err := t.write(ctx, sn, s)
			if err != nil {
				return err
			}
			paths[strings.ToLower(s.UUID)] = pth
		}
	}
	for _, port := range []bool{false, true} {
		for _, s := range t.steps {
			if s.Port != port || !s.Activate {
				continue
			}
			pth, ok := paths[strings.ToLower(s.UUID)]
			if !ok {
				pth, ok = sn.byUUID[strings.ToLower(s.UUID)]
			}
			if !ok {
				return fmt.Errorf("activate connection %q: no profile with UUID %s", s.Key, s.UUID)
			}
			if ac, ok := active[strings.ToLower(s.UUID)]; ok && s.Action == actNone && t.stateOf(sn, ac) == 1 {
				// Already activating with these settings: wait for it
				// rather than restart it.
				if err := t.waitActivated(ctx, s, ac); err != nil {
					return err
				}
				continue
			}
			if err := t.activate(ctx, s, pth); err != nil {
				return err
			}
		}
	}
	return nil
}

// write adds or updates one profile and returns its settings path.
func (t *tx) write(ctx context.Context, sn *snapshot, s step) (dbus.ObjectPath, error) {
	uuid := strings.ToLower(s.UUID)
	if s.Action == actAdd {
		settings := newSettings(s.Key, uuid, s.Conn)
		t.p.mu.Lock()
		prev, ok := t.p.deleted[uuid]
		t.p.mu.Unlock()
		if ok {
			// Re-creating a profile this process deleted (a rollback):
			// start from everything it had, not only the managed fields.
			if full, err := sendable(prev); err == nil {
				settings = full
				applyFields(settings, s.Conn)
			}
		}
		flags := uint32(saveToDisk)
		if s.Conn.Active != nil && !*s.Conn.Active {
			flags |= blockAutoconnect
		}
		var pth dbus.ObjectPath
		var result map[string]dbus.Variant
		if err := dbusx.Call(ctx, t.conn.Object(busName, settingsObj), settingsIfc+".AddConnection2", []any{&pth, &result},
			settings, flags, map[string]dbus.Variant{}); err != nil {
			return "", fmt.Errorf("add connection %q: %w", s.Key, err)
		}
		return pth, nil
	}
	pth, ok := sn.byUUID[uuid]
	if !ok {
		return "", fmt.Errorf("update connection %q: no profile with UUID %s (deleted meanwhile?)", s.Key, s.UUID)
	}
	settings, err := sendable(sn.settings[pth])
	if err != nil {
		return "", fmt.Errorf("update connection %q: %w", s.Key, err)
	}
	applyFields(settings, s.Conn)
	if s.Rename != "" {
		settings["connection"]["id"] = dbus.MakeVariant(s.Rename)
	}
	var result map[string]dbus.Variant
	if err := dbusx.Call(ctx, t.conn.Object(busName, pth), connIfc+".Update2", []any{&result},
		settings, uint32(saveToDisk), map[string]dbus.Variant{}); err != nil {
		return "", fmt.Errorf("update connection %q: %w", s.Key, err)
	}
	return pth, nil
}

func cloneSettings(s Settings) Settings {
	out := make(Settings, len(s))
	for k, m := range s {
		c := make(map[string]dbus.Variant, len(m))
		for kk, v := range m {
			c[kk] = v
		}
		out[k] = c
	}
	return out
}

// activate activates a profile and waits until it is activated and the
// addresses it declares are on its device.
func (t *tx) activate(ctx context.Context, s step, pth dbus.ObjectPath) error {
	var ac dbus.ObjectPath
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".ActivateConnection", []any{&ac}, pth, dbus.ObjectPath("/"), dbus.ObjectPath("/")); err != nil {
		return fmt.Errorf("activate connection %q%s: %w", s.Key, t.onDevice(s), err)
	}
	return t.waitActivated(ctx, s, ac)
}

func (t *tx) stateOf(sn *snapshot, ac dbus.ObjectPath) uint32 {
	st, _ := sn.objs[ac][activeIfc]["State"].Value().(uint32)
	return st
}

// waitActivated waits for an active connection to reach activated and
// checks the addresses the step declares.
func (t *tx) waitActivated(ctx context.Context, s step, ac dbus.ObjectPath) error {
	st, reason, err := t.waitState(ctx, ac, func(st uint32) bool { return st == 2 || st == 4 })
	if err != nil {
		return fmt.Errorf("activate connection %q%s: %w", s.Key, t.onDevice(s), err)
	}
	if st != 2 {
		return fmt.Errorf("activate connection %q%s: NetworkManager gave up: %s%s", s.Key, t.onDevice(s), acReason(reason), t.deviceReason(ctx, s))
	}
	return t.checkAddresses(ctx, s, ac)
}

func (t *tx) deactivate(ctx context.Context, key string, ac dbus.ObjectPath) error {
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".DeactivateConnection", nil, ac); err != nil {
		if dbusx.ErrorName(err) == "org.freedesktop.NetworkManager.ConnectionNotActive" {
			return nil
		}
		return fmt.Errorf("deactivate connection %q: %w", key, err)
	}
	if _, _, err := t.waitState(ctx, ac, func(st uint32) bool { return st == 4 }); err != nil {
		return fmt.Errorf("deactivate connection %q: %w", key, err)
	}
	return nil
}

func (t *tx) onDevice(s step) string {
	if s.Conn != nil && s.Conn.InterfaceName != nil && *s.Conn.InterfaceName != "" {
		return " on device " + *s.Conn.InterfaceName
	}
	if b, ok := t.before[strings.ToLower(s.UUID)]; ok {
		if n := str(b["connection"]["interface-name"]); n != "" {
			return " on device " + n
		}
	}
	return ""
}

// deviceReason is ", device br9 is failed (reason ...)" for an error.
func (t *tx) deviceReason(ctx context.Context, s step) string {
	name := strings.TrimPrefix(t.onDevice(s), " on device ")
	if name == "" {
		return ""
	}
	var dev dbus.ObjectPath
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".GetDeviceByIpIface", []any{&dev}, name); err != nil {
		return fmt.Sprintf("; device %s: %v", name, err)
	}
	v, err := dbusx.Get(ctx, t.conn.Object(busName, dev), deviceIfc, "StateReason")
	if err != nil {
		return ""
	}
	sr, _ := v.Value().([]any)
	if len(sr) != 2 {
		return ""
	}
	st, _ := sr[0].(uint32)
	reason, _ := sr[1].(uint32)
	return fmt.Sprintf("; device %s is %s (reason: %s)", name, deviceState(st), devReason(reason))
}

// waitState waits until the active connection's state satisfies done, or
// it vanishes (treated as deactivated), within ActivationTimeout.
func (t *tx) waitState(ctx context.Context, ac dbus.ObjectPath, done func(uint32) bool) (uint32, uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, ActivationTimeout)
	defer cancel()
	obj := t.conn.Object(busName, ac)
	last := uint32(0)
	for {
		wake := t.w.wait()
		if st, reason, ok := t.w.last(ac); ok && done(st) {
			return st, reason, nil
		}
		v, err := dbusx.Get(ctx, obj, activeIfc, "State")
		if err != nil {
			if n := dbusx.ErrorName(err); n == "org.freedesktop.DBus.Error.UnknownObject" || n == "org.freedesktop.DBus.Error.UnknownMethod" || n == "org.freedesktop.DBus.Error.UnknownInterface" {
				_, reason, _ := t.w.last(ac)
				return 4, reason, nil
			}
			if ctx.Err() != nil {
				return 0, 0, fmt.Errorf("still %s after %s", activeStates[last], ActivationTimeout)
			}
			return 0, 0, err
		}
		if st, ok := v.Value().(uint32); ok {
			last = st
			if done(st) {
				_, reason, _ := t.w.last(ac)
				return st, reason, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("still %s after %s", activeStates[last], ActivationTimeout)
		case <-wake:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// checkAddresses confirms NetworkManager's view of the device after
// activation: every address the step declares is configured.
func (t *tx) checkAddresses(ctx context.Context, s step, ac dbus.ObjectPath) error {
	if s.Conn == nil {
		return nil
	}
	for _, fam := range []struct {
		ip   *IP
		prop string
		ifc  string
	}{{s.Conn.IPv4, "Ip4Config", ip4Ifc}, {s.Conn.IPv6, "Ip6Config", ip6Ifc}} {
		if fam.ip == nil || len(fam.ip.Addresses) == 0 {
			continue
		}
		v, err := dbusx.Get(ctx, t.conn.Object(busName, ac), activeIfc, fam.prop)
		if err != nil {
			return fmt.Errorf("activate connection %q: read %s: %w", s.Key, fam.prop, err)
		}
		cfg, _ := v.Value().(dbus.ObjectPath)
		have := map[string]bool{}
		if cfg != "" && cfg != "/" {
			ad, err := dbusx.Get(ctx, t.conn.Object(busName, cfg), fam.ifc, "AddressData")
			if err != nil {
				return fmt.Errorf("activate connection %q: read %s addresses: %w", s.Key, fam.prop, err)
			}
			for _, a := range addressData(ad.Value()) {
				have[a] = true
			}
		}
		for _, want := range canonPrefixes(fam.ip.Addresses) {
			if !have[want] {
				return fmt.Errorf("activate connection %q%s: activated, but address %s is not configured (NetworkManager reports %v)", s.Key, t.onDevice(s), want, slices.Sorted(maps.Keys(have)))
			}
		}
	}
	return nil
}

// addressData decodes an IPxConfig AddressData value (aa{sv}) into CIDRs.
func addressData(v any) []string {
	ad, _ := v.([]map[string]dbus.Variant)
	var out []string
	for _, a := range ad {
		addr, err := netip.ParseAddr(str(a["address"]))
		prefix, ok := a["prefix"].Value().(uint32)
		if err != nil || !ok || int(prefix) > addr.BitLen() {
			continue
		}
		out = append(out, netip.PrefixFrom(addr, int(prefix)).String())
	}
	sort.Strings(out)
	return out
}

// rollback undoes a failed transaction: CheckpointRollback restores the
// devices' configuration and active profiles and deletes profiles added
// since; then every touched profile NetworkManager's checkpoint does not
// cover (inactive ones) is put back from the settings read before.
func (t *tx) rollback(ctx context.Context, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RollbackTimeout)
	defer cancel()
	var problems []string
	var result map[string]uint32
	if err := dbusx.Call(ctx, t.nm(), nmIfc+".CheckpointRollback", []any{&result}, t.cp); err != nil {
		problems = append(problems, fmt.Sprintf("CheckpointRollback %s: %v", t.cp, err))
	}
	for dev, r := range result {
		if r != 0 {
			name := dev
			if v, err := dbusx.Get(ctx, t.conn.Object(busName, dbus.ObjectPath(dev)), deviceIfc, "Interface"); err == nil {
				if s, ok := v.Value().(string); ok {
					name = s
				}
			}
			problems = append(problems, fmt.Sprintf("device %s: %s", name, rollbackResult(r)))
		}
	}
	sn, err := t.p.read(ctx)
	if err != nil {
		problems = append(problems, "re-read after rollback: "+err.Error())
	} else {
		uuids := make([]string, 0, len(t.steps))
		for _, s := range t.steps {
			uuids = append(uuids, strings.ToLower(s.UUID))
		}
		for _, u := range uuids {
			before, existed := t.before[u]
			pth, exists := sn.byUUID[u]
			switch {
			case !existed && exists:
				if err := dbusx.Call(ctx, t.conn.Object(busName, pth), connIfc+".Delete", nil); err != nil {
					problems = append(problems, fmt.Sprintf("delete new profile %s: %v", u, err))
				}
			case existed && !exists:
				var np dbus.ObjectPath
				var res map[string]dbus.Variant
				send, err := sendable(before)
				if err == nil {
					err = dbusx.Call(ctx, t.conn.Object(busName, settingsObj), settingsIfc+".AddConnection2", []any{&np, &res},
						send, uint32(saveToDisk|blockAutoconnect), map[string]dbus.Variant{})
				}
				if err != nil {
					problems = append(problems, fmt.Sprintf("re-add deleted profile %s: %v", u, err))
				}
			case existed && exists && !sameSettings(before, sn.settings[pth]):
				var res map[string]dbus.Variant
				send, err := sendable(before)
				if err == nil {
					err = dbusx.Call(ctx, t.conn.Object(busName, pth), connIfc+".Update2", []any{&res},
						send, uint32(saveToDisk), map[string]dbus.Variant{})
				}
				if err != nil {
					problems = append(problems, fmt.Sprintf("restore profile %s: %v", u, err))
				}
			}
		}
	}
	problems = append(problems, t.waitReactivated(ctx)...)
	if len(problems) > 0 {
		return fmt.Errorf("%w; rollback was incomplete: %s", cause, strings.Join(problems, "; "))
	}
	return fmt.Errorf("%w; everything was rolled back to the state before the transaction (NetworkManager checkpoint)", cause)
}

// waitReactivated waits (up to ActivationTimeout) until every profile
// that was activated before the transaction is activated again: the
// checkpoint rollback reactivates them, and returning while they are still
// activating would make the next query see them inactive.
func (t *tx) waitReactivated(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, ActivationTimeout)
	defer cancel()
	for {
		sn, err := t.p.read(ctx)
		if err != nil {
			return []string{"wait for reactivation: " + err.Error()}
		}
		active := sn.activeByUUID()
		var pending []string
		for u, id := range t.activeBefore {
			ac, ok := active[u]
			if st := t.stateOf(sn, ac); !ok || st != 2 {
				pending = append(pending, fmt.Sprintf("%q is %s", id, map[bool]string{true: activeStates[st], false: "not active"}[ok]))
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			sort.Strings(pending)
			return []string{"after rollback, " + strings.Join(pending, ", ") + " (was activated before)"}
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sameSettings compares two GetSettings results, ignoring the activation
// timestamp.
func sameSettings(a, b Settings) bool {
	strip := func(s Settings) Settings {
		c := cloneSettings(s)
		if c["connection"] != nil {
			delete(c["connection"], "timestamp")
		}
		return c
	}
	return reflect.DeepEqual(strip(a), strip(b))
}

func rollbackResult(r uint32) string {
	switch r {
	case 1:
		return "device no longer exists"
	case 2:
		return "device is now unmanaged"
	case 3:
		return "restore failed"
	}
	return fmt.Sprintf("result %d", r)
}

// watcher follows StateChanged of active connections so a waiter learns
// the state reason even when the object is gone before it looks.
type watcher struct {
	mu     sync.Mutex
	states map[dbus.ObjectPath][2]uint32 // state, reason
	wake   chan struct{}                 // closed on every update
}

func newWatcher() *watcher {
	return &watcher{states: map[dbus.ObjectPath][2]uint32{}, wake: make(chan struct{})}
}

// signal takes one StateChanged of an active connection. It never blocks.
func (w *watcher) signal(sig *dbus.Signal) {
	if len(sig.Body) != 2 {
		return
	}
	st, ok1 := sig.Body[0].(uint32)
	reason, ok2 := sig.Body[1].(uint32)
	if !ok1 || !ok2 {
		return
	}
	w.mu.Lock()
	if len(w.states) > 4096 {
		w.states = map[dbus.ObjectPath][2]uint32{}
	}
	w.states[sig.Path] = [2]uint32{st, reason}
	close(w.wake)
	w.wake = make(chan struct{})
	w.mu.Unlock()
}

func (w *watcher) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wake
}

func (w *watcher) last(p dbus.ObjectPath) (state, reason uint32, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.states[p]
	return s[0], s[1], ok
}

var acReasons = map[uint32]string{
	0: "unknown", 1: "none", 2: "user disconnected", 3: "device disconnected", 4: "VPN service stopped",
	5: "IP configuration invalid", 6: "connection attempt timed out", 7: "service start timed out",
	8: "service failed to start", 9: "secrets were required but not provided", 10: "login failed",
	11: "profile was removed", 12: "a dependency failed (controller or parent)", 13: "creating the software device failed",
	14: "the device disappeared",
}

func acReason(r uint32) string {
	if s, ok := acReasons[r]; ok {
		return fmt.Sprintf("%s (active connection state reason %d)", s, r)
	}
	return fmt.Sprintf("active connection state reason %d", r)
}

var devReasons = map[uint32]string{
	0: "none", 1: "unknown", 2: "now managed", 3: "now unmanaged", 4: "configuration failed",
	5: "IP configuration unavailable", 6: "IP configuration expired", 7: "no secrets", 15: "DHCP client failed to start",
	16: "DHCP error", 17: "DHCP failed", 36: "device removed", 38: "carrier changed", 39: "connection assumed",
	40: "supplicant available", 41: "modem not found", 42: "Bluetooth failed", 50: "a dependency failed",
	51: "a port of the controller failed", 53: "the device's parent changed", 55: "the device's parent is gone",
	56: "the device was activated by another profile", 61: "IP method unsupported", 62: "SR-IOV configuration failed",
	64: "peer not found", 65: "the device is unmanaged by the user", 66: "the controller's device is unmanaged",
}

func devReason(r uint32) string {
	if s, ok := devReasons[r]; ok {
		return fmt.Sprintf("%s, %d", s, r)
	}
	return fmt.Sprintf("device state reason %d", r)
}
