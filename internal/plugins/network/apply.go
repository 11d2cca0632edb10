package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Apply implements plugin.Plugin: one op, over rtnetlink, each request
// bounded by the socket timeout and ctx.
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	var d opData
	if err := json.Unmarshal(op.Data, &d); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	switch d.Kind {
	case kindCreate:
		return p.create(ctx, d.Link)
	case kindDelete:
		return p.delete(ctx, d.Name)
	case kindSet:
		return p.set(ctx, d)
	case kindExpect:
		if _, err := p.link(ctx, d.Name); err != nil {
			return fmt.Errorf("%w: this document does not create it (give a creatable type: %s), and no plugin applied before this one made it", err, strings.Join(creatable, ", "))
		}
		return nil
	case kindController:
		return p.controller(ctx, d.Name, deref(d.Controller))
	case kindUp, kindDown:
		return p.updown(ctx, d.Name, d.Kind == kindUp)
	case kindAddr:
		return p.addresses(ctx, d.Name, d.Del, d.Add)
	case kindRouteAdd, kindRouteRepl:
		return p.routeSet(ctx, d.Route, d.Kind == kindRouteRepl)
	case kindRouteDel:
		return p.routeDel(ctx, d.Route)
	}
	return fmt.Errorf("unknown op kind %q", d.Kind)
}

func (p *Plugin) link(ctx context.Context, name string) (netlink.Link, error) {
	var l netlink.Link
	err := p.call(ctx, "find link "+name, func(h *netlink.Handle) error {
		var err error
		l, err = h.LinkByName(name)
		return err
	})
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, noLinkError{name}
		}
		return nil, err
	}
	return l, nil
}

func (p *Plugin) create(ctx context.Context, d *Interface) error {
	if d == nil {
		return fmt.Errorf("create: no link in op data")
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = d.Name
	var l netlink.Link
	switch d.Type {
	case TypeBridge:
		l = &netlink.Bridge{LinkAttrs: attrs}
	case TypeVeth:
		if d.Veth == nil || d.Veth.Peer == "" {
			return fmt.Errorf("create veth %s: no peer name", d.Name)
		}
		l = &netlink.Veth{LinkAttrs: attrs, PeerName: d.Veth.Peer}
	case TypeDummy:
		l = &netlink.Dummy{LinkAttrs: attrs}
	case TypeVXLAN:
		v := d.VXLAN
		x := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: v.ID, Port: v.DestinationPort, Learning: true}
		if v.Remote != "" {
			x.Group = net.ParseIP(v.Remote)
		}
		if v.Local != "" {
			x.SrcAddr = net.ParseIP(v.Local)
		}
		if v.BaseIface != "" {
			base, err := p.link(ctx, v.BaseIface)
			if err != nil {
				return fmt.Errorf("create vxlan %s: base_iface: %w", d.Name, err)
			}
			x.VtepDevIndex = base.Attrs().Index
		}
		l = x
	case TypeVLAN:
		base, err := p.link(ctx, d.VLAN.BaseIface)
		if err != nil {
			return fmt.Errorf("create vlan %s: base_iface: %w", d.Name, err)
		}
		attrs.ParentIndex = base.Attrs().Index
		l = &netlink.Vlan{LinkAttrs: attrs, VlanId: d.VLAN.ID}
	case TypeBond:
		b := netlink.NewLinkBond(attrs)
		if d.Bond != nil && d.Bond.Mode != "" {
			b.Mode = netlink.StringToBondMode(d.Bond.Mode)
		}
		l = b
	default:
		return fmt.Errorf("create %s: links of type %q cannot be created", d.Name, d.Type)
	}
	err := p.call(ctx, fmt.Sprintf("create %s %s", d.Type, d.Name), func(h *netlink.Handle) error { return h.LinkAdd(l) })
	if err != nil && errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("kernel has no %s link type (\"Unknown device type\"; load its module, e.g. `modprobe %s`, or use a kernel that has it): %w", d.Type, kernelModule(d.Type), err)
	}
	if err != nil && errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w (a link with that name appeared since the plan was made; run the apply again)", err)
	}
	return err
}

func kernelModule(t string) string {
	if t == TypeVLAN {
		return "8021q"
	}
	if t == TypeBond {
		return "bonding"
	}
	return t
}

func (p *Plugin) delete(ctx context.Context, name string) error {
	l, err := p.link(ctx, name)
	if err != nil {
		// Already gone (a veth whose peer was removed first): done.
		if isNoLink(err) {
			return nil
		}
		return err
	}
	err = p.call(ctx, "delete "+name, func(h *netlink.Handle) error { return h.LinkDel(l) })
	if err != nil && (errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)) {
		return nil
	}
	return err
}

// noLinkError says a named link is not there.
type noLinkError struct{ name string }

func (e noLinkError) Error() string { return "link " + e.name + " does not exist" }

func isNoLink(err error) bool {
	var nl noLinkError
	return errors.As(err, &nl)
}

func (p *Plugin) set(ctx context.Context, d opData) error {
	l, err := p.link(ctx, d.Name)
	if err != nil {
		return err
	}
	if d.MTU != 0 {
		err := p.call(ctx, fmt.Sprintf("set mtu %d on %s", d.MTU, d.Name), func(h *netlink.Handle) error { return h.LinkSetMTU(l, d.MTU) })
		if err != nil {
			if errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w (the device does not accept this MTU: outside its min/max, or larger than a bridge port allows)", err)
			}
			return err
		}
	}
	if d.MAC != "" {
		hw, err := net.ParseMAC(d.MAC)
		if err != nil {
			return fmt.Errorf("set mac_address on %s: %w", d.Name, err)
		}
		if err := p.call(ctx, fmt.Sprintf("set mac_address %s on %s", d.MAC, d.Name), func(h *netlink.Handle) error { return h.LinkSetHardwareAddr(l, hw) }); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%w (this device changes its address only while down: add state: down, or apply twice)", err)
			}
			return err
		}
	}
	return nil
}

func (p *Plugin) controller(ctx context.Context, name, ctl string) error {
	l, err := p.link(ctx, name)
	if err != nil {
		return err
	}
	if ctl == "" {
		return p.call(ctx, "detach "+name+" from its controller", func(h *netlink.Handle) error { return h.LinkSetNoMaster(l) })
	}
	m, err := p.link(ctx, ctl)
	if err != nil {
		return fmt.Errorf("make %s a port: controller %w", name, err)
	}
	return p.call(ctx, fmt.Sprintf("make %s a port of %s", name, ctl), func(h *netlink.Handle) error { return h.LinkSetMaster(l, m) })
}

func (p *Plugin) updown(ctx context.Context, name string, up bool) error {
	l, err := p.link(ctx, name)
	if err != nil {
		return err
	}
	if up {
		return p.call(ctx, "set "+name+" up", func(h *netlink.Handle) error { return h.LinkSetUp(l) })
	}
	return p.call(ctx, "set "+name+" down", func(h *netlink.Handle) error { return h.LinkSetDown(l) })
}

func toAddr(cidr string) (*netlink.Addr, error) {
	pfx, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, err
	}
	ip := net.IP(pfx.Addr().AsSlice())
	bits := 32
	if pfx.Addr().Is6() {
		bits = 128
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(pfx.Bits(), bits)}}, nil
}

// addresses removes, then adds; removing first lets an IPv6 address change
// its prefix length (IPv6 identifies an address without its prefix).
func (p *Plugin) addresses(ctx context.Context, name string, del, add []string) error {
	l, err := p.link(ctx, name)
	if err != nil {
		return err
	}
	for _, c := range del {
		a, err := toAddr(c)
		if err != nil {
			return fmt.Errorf("remove address %s from %s: %w", c, name, err)
		}
		err = p.call(ctx, fmt.Sprintf("remove address %s from %s", c, name), func(h *netlink.Handle) error { return h.AddrDel(l, a) })
		if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	for _, c := range add {
		a, err := toAddr(c)
		if err != nil {
			return fmt.Errorf("add address %s to %s: %w", c, name, err)
		}
		err = p.call(ctx, fmt.Sprintf("add address %s to %s", c, name), func(h *netlink.Handle) error { return h.AddrAdd(l, a) })
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

// kernelRoute builds the netlink form of a route, resolving the next-hop
// link by name. For a route to delete, found links that vanished are
// not an error (the route went with them).
func (p *Plugin) kernelRoute(ctx context.Context, r *Route) (*netlink.Route, error) {
	dst, err := parseCIDR(r.Destination)
	if err != nil {
		return nil, err
	}
	bits := 32
	if dst.Addr().Is6() {
		bits = 128
	}
	k := &netlink.Route{
		Dst:      &net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), bits)},
		Table:    tableOf(r.TableID),
		Priority: deref(r.Metric),
		Protocol: unix.RTPROT_STATIC,
		Type:     unix.RTN_UNICAST,
	}
	if dst.Addr().Is4() {
		k.Family = unix.AF_INET
	} else {
		k.Family = unix.AF_INET6
	}
	switch r.RouteType {
	case RouteBlackhole:
		k.Type = unix.RTN_BLACKHOLE
	case RouteUnreachable:
		k.Type = unix.RTN_UNREACHABLE
	case RouteProhibit:
		k.Type = unix.RTN_PROHIBIT
	}
	if r.NextHopAddress != "" {
		k.Gw = net.ParseIP(r.NextHopAddress)
	}
	if r.Source != "" {
		k.Src = net.ParseIP(r.Source)
	}
	if r.NextHopInterface != "" {
		l, err := p.link(ctx, r.NextHopInterface)
		if err != nil {
			return nil, fmt.Errorf("next_hop_interface: %w", err)
		}
		k.LinkIndex = l.Attrs().Index
	}
	// Like `ip route add`: a directly connected IPv4 route is scope link.
	if k.Type == unix.RTN_UNICAST && k.Gw == nil && k.Family == unix.AF_INET {
		k.Scope = netlink.SCOPE_LINK
	}
	return k, nil
}

func (p *Plugin) routeSet(ctx context.Context, r *Route, replace bool) error {
	if r == nil {
		return fmt.Errorf("route op without a route")
	}
	k, err := p.kernelRoute(ctx, r)
	if err != nil {
		return fmt.Errorf("route %s: %w", describeRoute(r), err)
	}
	what := "add route " + describeRoute(r)
	err = p.call(ctx, what, func(h *netlink.Handle) error {
		if replace {
			return h.RouteReplace(k)
		}
		return h.RouteAdd(k)
	})
	if err != nil && !replace && errors.Is(err, unix.EEXIST) {
		err = p.call(ctx, "replace route "+describeRoute(r), func(h *netlink.Handle) error { return h.RouteReplace(k) })
	}
	if err != nil && errors.Is(err, unix.ENETUNREACH) {
		return fmt.Errorf("%w (the gateway is not on a connected network: give the link an address in its subnet first)", err)
	}
	return err
}

func (p *Plugin) routeDel(ctx context.Context, r *Route) error {
	if r == nil {
		return fmt.Errorf("route op without a route")
	}
	k, err := p.kernelRoute(ctx, r)
	if err != nil {
		if isNoLink(err) {
			return nil // the link went, and its routes with it
		}
		return fmt.Errorf("route %s: %w", describeRoute(r), err)
	}
	// Match any protocol and scope, as `ip route del` does: the route
	// may have been added by another tool.
	k.Protocol = 0
	k.Scope = netlink.SCOPE_NOWHERE
	err = p.call(ctx, "remove route "+describeRoute(r), func(h *netlink.Handle) error { return h.RouteDel(k) })
	if err != nil && errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}
