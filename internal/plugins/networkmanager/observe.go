package networkmanager

import (
	"context"
	"sort"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/netcheck"
)

var _ netcheck.Source = (*Plugin)(nil)

// interfaceFlagUp is NM_DEVICE_INTERFACE_FLAG_UP: the kernel link is
// administratively up (IFF_UP).
const interfaceFlagUp = 0x1

// Observe implements netcheck.Source: one observation per device
// NetworkManager knows, from one GetManagedObjects call.
//
//   - Exists: the device is real (a kernel link); a device NetworkManager
//     only knows from a profile (not created yet) is reported with Exists
//     false.
//   - State: "up" or "down" from the device's InterfaceFlags (IFF_UP), the
//     administrative state, not NetworkManager's own device state
//     (activated, disconnected, unmanaged...), which says whether a profile
//     is applied, not whether the link is up.
//   - MTU: the device's Mtu.
//   - Addresses: from the device's IP4Config and IP6Config AddressData,
//     known only when NetworkManager exposes both configs (it does for
//     every real device it tracks, managed or not).
//   - Master: the controller whose Ports list the device; known only for
//     managed devices (NetworkManager does not list external ports of
//     bridges it does not manage).
func (p *Plugin) Observe(ctx context.Context) ([]netcheck.Observation, error) {
	conn, _, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := managedObjects(ctx, conn)
	if err != nil {
		return nil, err
	}
	return observations(objs), nil
}

func observations(objs objects) []netcheck.Observation {
	name := func(dev dbus.ObjectPath) string { return str(objs[dev][deviceIfc]["Interface"]) }
	ctrlOf := map[dbus.ObjectPath]string{}
	for pth, ifs := range objs {
		if d, ok := ifs[deviceIfc]; ok {
			ports, _ := d["Ports"].Value().([]dbus.ObjectPath)
			for _, port := range ports {
				ctrlOf[port] = name(pth)
			}
		}
	}
	byName := map[string]netcheck.Observation{}
	for pth, ifs := range objs {
		d, ok := ifs[deviceIfc]
		if !ok {
			continue
		}
		n := str(d["Interface"])
		if n == "" {
			continue
		}
		o := netcheck.Observation{Source: "networkmanager", Interface: n}
		o.Exists, _ = d["Real"].Value().(bool)
		if prev, dup := byName[n]; dup && prev.Exists && !o.Exists {
			continue
		}
		if !o.Exists {
			byName[n] = o
			continue
		}
		if f, ok := d["InterfaceFlags"].Value().(uint32); ok {
			o.State = "down"
			if f&interfaceFlagUp != 0 {
				o.State = "up"
			}
		}
		if mtu, ok := d["Mtu"].Value().(uint32); ok {
			o.MTU = int(mtu)
		}
		c4, _ := d["Ip4Config"].Value().(dbus.ObjectPath)
		c6, _ := d["Ip6Config"].Value().(dbus.ObjectPath)
		if c4 != "" && c4 != "/" && c6 != "" && c6 != "/" {
			o.KnownAddresses = true
			o.Addresses = append(addressData(objs[c4][ip4Ifc]["AddressData"].Value()), addressData(objs[c6][ip6Ifc]["AddressData"].Value())...)
			sort.Strings(o.Addresses)
		}
		if managed, _ := d["Managed"].Value().(bool); managed {
			o.KnownMaster = true
			o.Master = ctrlOf[pth]
		}
		byName[n] = o
	}
	out := make([]netcheck.Observation, 0, len(byName))
	for _, o := range byName {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out
}
