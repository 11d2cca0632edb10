// Package network is the op-dbus plugin for links, addresses and routes,
// read and changed over rtnetlink (github.com/vishvananda/netlink). Its
// state is shaped after nmstate. See README.md.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

func init() {
	plugin.Register("network", func(plugin.Options) plugin.Plugin { return New(Options{}) })
}

// DefaultCallTimeout bounds one netlink request (send and each receive).
const DefaultCallTimeout = 10 * time.Second

// Options choose where the plugin works.
type Options struct {
	// NetNS is the path of a network namespace file (/proc/PID/ns/net,
	// /run/netns/NAME). Empty: the namespace the process runs in.
	NetNS string
	// CallTimeout bounds each netlink request; DefaultCallTimeout when 0.
	CallTimeout time.Duration
}

// Plugin is the network plugin.
type Plugin struct {
	opts Options

	mu  sync.Mutex
	h   *netlink.Handle
	ns  netns.NsHandle // the target namespace when opts.NetNS is set, else -1
	raw *nl.SocketHandle
}

// New returns the plugin for the namespace o names.
func New(o Options) *Plugin {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	return &Plugin{opts: o, ns: netns.None()}
}

func (p *Plugin) Name() string  { return "network" }
func (p *Plugin) NewState() any { return &State{} }

// After implements plugin.Plugin: Open vSwitch and NetworkManager create
// bridges and other links that this plugin then addresses and routes.
func (p *Plugin) After() []string { return []string{"ovs", "networkmanager"} }

// Close releases the netlink sockets and the namespace handle.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		p.h.Close()
		p.h = nil
	}
	if p.raw != nil {
		p.raw.Socket.Close()
		p.raw = nil
	}
	if p.ns.IsOpen() {
		p.ns.Close()
	}
	p.ns = netns.None()
	return nil
}

// handle opens the rtnetlink socket once, in the target namespace.
func (p *Plugin) handle() (*netlink.Handle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		return p.h, nil
	}
	var h *netlink.Handle
	var err error
	if p.opts.NetNS != "" {
		if !p.ns.IsOpen() {
			ns, err := netns.GetFromPath(p.opts.NetNS)
			if err != nil {
				return nil, fmt.Errorf("open network namespace %s: %w", p.opts.NetNS, err)
			}
			p.ns = ns
		}
		h, err = netlink.NewHandleAt(p.ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	if err := h.SetSocketTimeout(p.opts.CallTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set rtnetlink socket timeout: %w", err)
	}
	p.h = h
	return h, nil
}

// rawSocket is a second rtnetlink socket in the target namespace for the
// one request the library has no call for (a link looked up in a peer
// namespace by its netnsid).
func (p *Plugin) rawSocket() (*nl.SocketHandle, error) {
	if _, err := p.handle(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.raw != nil {
		return p.raw, nil
	}
	var s *nl.NetlinkSocket
	var err error
	if p.ns.IsOpen() {
		s, err = nl.GetNetlinkSocketAt(p.ns, netns.None(), unix.NETLINK_ROUTE)
	} else {
		s, err = nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(p.opts.CallTimeout.Nanoseconds())
	if err := s.SetSendTimeout(&tv); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.SetReceiveTimeout(&tv); err != nil {
		s.Close()
		return nil, err
	}
	p.raw = &nl.SocketHandle{Socket: s}
	return p.raw, nil
}

// call runs one synchronous netlink exchange, bounded twice: by the socket
// timeout (the goroutine always ends) and by ctx (the caller stops waiting).
func (p *Plugin) call(ctx context.Context, what string, f func(h *netlink.Handle) error) error {
	h, err := p.handle()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	done := make(chan error, 1)
	go func() { done <- f(h) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", what, explain(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w (the kernel did not answer in time)", what, ctx.Err())
	}
}

// dump runs a dump request, retrying when the kernel reports the dump was
// interrupted by a concurrent change (the results would be inconsistent).
func dump[T any](ctx context.Context, p *Plugin, what string, f func(h *netlink.Handle) (T, error)) (T, error) {
	var out T
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = p.call(ctx, what, func(h *netlink.Handle) error {
			var e error
			out, e = f(h)
			return e
		})
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

func explain(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (changing links needs CAP_NET_ADMIN: run as root)", err)
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EWOULDBLOCK):
		return fmt.Errorf("%w (no answer from the kernel within the netlink timeout)", err)
	}
	return err
}

// Available implements plugin.Plugin: an rtnetlink socket opens in the
// namespace and a link dump works.
func (p *Plugin) Available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.opts.CallTimeout)
	defer cancel()
	_, err := dump(ctx, p, "list links", func(h *netlink.Handle) ([]netlink.Link, error) { return h.LinkList() })
	return err
}

// snapshot is one consistent read of links, addresses and routes.
type snapshot struct {
	links  []netlink.Link
	addrs  []netlink.Addr
	routes []netlink.Route
}

func (p *Plugin) read(ctx context.Context) (*snapshot, error) {
	var s snapshot
	var err error
	if s.links, err = dump(ctx, p, "list links", func(h *netlink.Handle) ([]netlink.Link, error) { return h.LinkList() }); err != nil {
		return nil, err
	}
	if s.addrs, err = dump(ctx, p, "list addresses", func(h *netlink.Handle) ([]netlink.Addr, error) {
		return h.AddrList(nil, netlink.FAMILY_ALL)
	}); err != nil {
		return nil, err
	}
	if s.routes, err = dump(ctx, p, "list routes", func(h *netlink.Handle) ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	}); err != nil {
		return nil, err
	}
	return &s, nil
}

// Query implements plugin.Plugin: every link (loopback included), its
// managed addresses, and every route that is not the kernel's own.
func (p *Plugin) Query(ctx context.Context) (any, error) {
	s, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	return p.build(ctx, s), nil
}

func (p *Plugin) build(ctx context.Context, s *snapshot) *State {
	names := map[int]string{}
	for _, l := range s.links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	st := &State{}
	byIndex := map[int]*Interface{}
	sort.SliceStable(s.links, func(i, j int) bool { return s.links[i].Attrs().Index < s.links[j].Attrs().Index })
	for _, l := range s.links {
		a := l.Attrs()
		ifc := &Interface{
			Name:       a.Name,
			Type:       kindOf(l),
			State:      StateDown,
			MTU:        ptr(a.MTU),
			Controller: ptr(names[a.MasterIndex]),
			IPv4:       &IPConfig{Address: []Address{}},
			IPv6:       &IPConfig{Address: []Address{}},
		}
		if a.Flags&net.FlagUp != 0 {
			ifc.State = StateUp
		}
		if len(a.HardwareAddr) == 6 {
			ifc.MACAddress = a.HardwareAddr.String()
		}
		switch v := l.(type) {
		case *netlink.Veth:
			ifc.Veth = &Veth{Peer: p.peerName(ctx, a, names)}
		case *netlink.Vxlan:
			x := &VXLAN{ID: v.VxlanId, DestinationPort: v.Port, BaseIface: names[v.VtepDevIndex]}
			if len(v.Group) > 0 && !v.Group.IsUnspecified() {
				x.Remote = v.Group.String()
			}
			if len(v.SrcAddr) > 0 && !v.SrcAddr.IsUnspecified() {
				x.Local = v.SrcAddr.String()
			}
			ifc.VXLAN = x
		case *netlink.Vlan:
			ifc.VLAN = &VLAN{BaseIface: names[a.ParentIndex], ID: v.VlanId}
		case *netlink.Bond:
			if v.Mode >= 0 && int(v.Mode) < len(bondModes) {
				ifc.Bond = &BondConf{Mode: bondModes[v.Mode]}
			}
		}
		st.Interfaces = append(st.Interfaces, ifc)
		byIndex[a.Index] = ifc
	}
	for _, ad := range s.addrs {
		ifc := byIndex[ad.LinkIndex]
		if ifc == nil || ad.IPNet == nil || !managedAddr(ad) {
			continue
		}
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		ones, _ := ad.Mask.Size()
		a := Address{IP: ip.String(), PrefixLength: ones}
		if ip.Is4() {
			ifc.IPv4.Address = append(ifc.IPv4.Address, a)
		} else {
			ifc.IPv6.Address = append(ifc.IPv6.Address, a)
		}
	}
	var routes []*Route
	for _, r := range s.routes {
		if rt := routeFromKernel(r, names); rt != nil {
			routes = append(routes, rt)
		}
	}
	sort.SliceStable(routes, func(i, j int) bool { return routeLess(routes[i], routes[j]) })
	st.Routes = &Routes{Config: routes}
	if st.Routes.Config == nil {
		st.Routes.Config = []*Route{}
	}
	return st
}

// managedAddr leaves out what the kernel or a lease owns: IPv6 link-local
// addresses (the kernel adds them when a link comes up) and addresses with
// a finite lifetime (DHCP, SLAAC: the daemon that leased them renews or
// drops them).
func managedAddr(a netlink.Addr) bool {
	if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
		return false
	}
	return a.Flags&unix.IFA_F_PERMANENT != 0
}

// routeFromKernel converts a route, or returns nil for a route this plugin
// does not manage: the local table, routes the kernel made for addresses
// (proto kernel), router advertisements, multipath and non-unicast kinds
// other than blackhole, unreachable and prohibit.
func routeFromKernel(r netlink.Route, names map[int]string) *Route {
	if r.Table == localTable || r.Protocol == unix.RTPROT_KERNEL || r.Protocol == unix.RTPROT_RA || len(r.MultiPath) > 0 {
		return nil
	}
	rt := &Route{TableID: r.Table, Metric: ptr(r.Priority)}
	switch r.Type {
	case unix.RTN_UNICAST:
	case unix.RTN_BLACKHOLE:
		rt.RouteType = RouteBlackhole
	case unix.RTN_UNREACHABLE:
		rt.RouteType = RouteUnreachable
	case unix.RTN_PROHIBIT:
		rt.RouteType = RouteProhibit
	default:
		return nil
	}
	var dst netip.Prefix
	if r.Dst != nil && r.Dst.IP != nil {
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			return nil
		}
		ones, _ := r.Dst.Mask.Size()
		dst = netip.PrefixFrom(a.Unmap(), ones)
	} else if r.Family == unix.AF_INET6 {
		dst = netip.MustParsePrefix("::/0")
	} else if r.Family == unix.AF_INET {
		dst = netip.MustParsePrefix("0.0.0.0/0")
	} else {
		return nil
	}
	rt.Destination = dst.Masked().String()
	if r.Gw != nil {
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.NextHopAddress = a.Unmap().String()
		}
	}
	if r.LinkIndex > 0 && rt.RouteType == "" {
		rt.NextHopInterface = names[r.LinkIndex]
	}
	if r.Src != nil {
		if a, ok := netip.AddrFromSlice(r.Src); ok {
			rt.Source = a.Unmap().String()
		}
	}
	return rt
}

func routeLess(a, b *Route) bool {
	if a.TableID != b.TableID {
		return a.TableID < b.TableID
	}
	pa, _ := netip.ParsePrefix(a.Destination)
	pb, _ := netip.ParsePrefix(b.Destination)
	if pa.Addr().Is4() != pb.Addr().Is4() {
		return pa.Addr().Is4()
	}
	if c := pa.Addr().Compare(pb.Addr()); c != 0 {
		return c < 0
	}
	if pa.Bits() != pb.Bits() {
		return pa.Bits() < pb.Bits()
	}
	return deref(a.Metric) < deref(b.Metric)
}

// kindOf names a link's type the way the state document does.
func kindOf(l netlink.Link) string {
	a := l.Attrs()
	switch t := l.Type(); t {
	case "device":
		switch {
		case a.Flags&net.FlagLoopback != 0 || a.EncapType == "loopback":
			return TypeLoopback
		case a.EncapType == "ether":
			return TypeEthernet
		case a.EncapType != "":
			return a.EncapType
		}
		return "device"
	case "tuntap":
		if tt, ok := l.(*netlink.Tuntap); ok && tt.Mode == netlink.TUNTAP_MODE_TAP {
			return "tap"
		}
		return "tun"
	default:
		return t
	}
}

// peerName names a veth's other end: by index in this namespace, or by
// asking the peer's namespace (IFLA_TARGET_NETNSID) when it lives in
// another one. "" when it cannot be found out.
func (p *Plugin) peerName(ctx context.Context, a *netlink.LinkAttrs, names map[int]string) string {
	if a.ParentIndex == 0 {
		return ""
	}
	if a.NetNsID < 0 {
		return names[a.ParentIndex]
	}
	sh, err := p.rawSocket()
	if err != nil {
		return ""
	}
	req := &nl.NetlinkRequest{
		NlMsghdr: unix.NlMsghdr{Len: unix.SizeofNlMsghdr, Type: unix.RTM_GETLINK, Flags: unix.NLM_F_REQUEST | unix.NLM_F_ACK},
		Sockets:  map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: sh},
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(a.ParentIndex)
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_TARGET_NETNSID, nl.Uint32Attr(uint32(a.NetNsID))))
	var name string
	_ = p.call(ctx, "look up veth peer", func(*netlink.Handle) error {
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil || len(msgs) == 0 {
			return err
		}
		l, err := netlink.LinkDeserialize(nil, msgs[0])
		if err == nil {
			name = l.Attrs().Name
		}
		return err
	})
	return name
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

// inNetNS runs f on an OS thread switched into the plugin's namespace (or
// directly, without one). Sockets f opens stay in that namespace.
func (p *Plugin) inNetNS(f func() error) error {
	if _, err := p.handle(); err != nil {
		return err
	}
	p.mu.Lock()
	ns := p.ns
	p.mu.Unlock()
	if !ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", p.opts.NetNS, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine
			// rather than run other code in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
