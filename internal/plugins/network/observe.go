package network

import (
	"context"
	"net"
	"net/netip"
	"sort"

	"github.com/op-dbus/op-dbus/internal/netcheck"
)

// SourceName is the netcheck.Observation.Source of Observe.
const SourceName = "netlink"

// Observe reports what the kernel says about every link, for
// `op-dbus check network`: existence, administrative state (IFF_UP), MTU,
// addresses (all but IPv6 link-local fe80::/10) and master.
func (p *Plugin) Observe(ctx context.Context) ([]netcheck.Observation, error) {
	s, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range s.links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	addrs := map[int][]string{}
	for _, a := range s.addrs {
		if a.IPNet == nil || (a.IP.To4() == nil && a.IP.IsLinkLocalUnicast()) {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		addrs[a.LinkIndex] = append(addrs[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones).String())
	}
	out := make([]netcheck.Observation, 0, len(s.links))
	for _, l := range s.links {
		a := l.Attrs()
		o := netcheck.Observation{
			Source:         SourceName,
			Interface:      a.Name,
			Exists:         true,
			State:          StateDown,
			MTU:            a.MTU,
			Addresses:      addrs[a.Index],
			KnownAddresses: true,
			Master:         names[a.MasterIndex],
			KnownMaster:    true,
		}
		if a.Flags&net.FlagUp != 0 {
			o.State = StateUp
		}
		sort.Strings(o.Addresses)
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out, nil
}

// Source adapts the plugin to netcheck.Source (name "netlink").
func (p *Plugin) Source() netcheck.Source { return source{p} }

type source struct{ p *Plugin }

func (s source) Name() string { return SourceName }
func (s source) Observe(ctx context.Context) ([]netcheck.Observation, error) {
	return s.p.Observe(ctx)
}
