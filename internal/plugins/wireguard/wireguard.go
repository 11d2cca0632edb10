package wireguard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// CallTimeout bounds one wgctrl call (a netlink request to the kernel or a
// UAPI exchange with a userspace implementation) when the caller's context
// has no earlier deadline.
var CallTimeout = 10 * time.Second

func init() {
	plugin.Register("wireguard", func(o plugin.Options) plugin.Plugin { return New(o) })
}

// Plugin is the wireguard plugin.
type Plugin struct {
	mu     sync.Mutex
	client *wgctrl.Client
}

// New returns the plugin.
func New(plugin.Options) *Plugin { return &Plugin{} }

func (p *Plugin) Name() string  { return "wireguard" }
func (p *Plugin) NewState() any { return &State{} }

// After: addresses and routes of the network plugin come before peers, so
// an endpoint is reachable when its peer is configured.
func (p *Plugin) After() []string { return []string{"network"} }

// Close releases the wgctrl client.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return nil
	}
	err := p.client.Close()
	p.client = nil
	return err
}

func (p *Plugin) wg() (*wgctrl.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("open WireGuard control (generic netlink): %w", err)
	}
	p.client = c
	return c, nil
}

// call runs f, which cannot be cancelled (wgctrl takes no context), and
// gives up waiting when ctx ends or CallTimeout passes. A call given up on
// finishes in the background.
func call[T any](ctx context.Context, what string, f func() (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := f()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("%s: no answer: %w (is the WireGuard implementation hung? for a userspace one, check its process and /var/run/wireguard)", what, ctx.Err())
	}
}

// Available implements plugin.Plugin.
func (p *Plugin) Available(ctx context.Context) error {
	_, err := p.wg()
	return err
}

// Query implements plugin.Plugin: every WireGuard interface, kernel or
// userspace (/var/run/wireguard/*.sock).
func (p *Plugin) Query(ctx context.Context) (any, error) {
	c, err := p.wg()
	if err != nil {
		return nil, err
	}
	devs, err := call(ctx, "list WireGuard devices", c.Devices)
	if err != nil {
		return nil, fmt.Errorf("%w%s", err, socketHint(err))
	}
	return StateOf(devs), nil
}

// StateOf turns wgctrl devices into state, as Query reports it: public
// keys only, never a private or preshared key.
func StateOf(devs []*wgtypes.Device) *State {
	st := &State{Interfaces: make(map[string]*Interface, len(devs))}
	for _, d := range devs {
		st.Interfaces[d.Name] = fromDevice(d)
	}
	return st
}

// QueryFor implements plugin.Scoped: only the interfaces desired names,
// plus what plan needs from the key files it names (the public key of a
// private key file, a digest of a preshared key file; never the keys).
func (p *Plugin) QueryFor(ctx context.Context, desired any) (any, error) {
	des, _ := desired.(*State)
	st := &State{Interfaces: map[string]*Interface{}, files: map[string]keyFile{}}
	if des == nil {
		return st, nil
	}
	c, err := p.wg()
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(des.Interfaces)) {
		d, err := call(ctx, "read WireGuard device "+name, func() (*wgtypes.Device, error) { return c.Device(name) })
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			return nil, fmt.Errorf("interfaces%s: %w%s", index(name), err, socketHint(err))
		}
		st.Interfaces[name] = fromDevice(d)
	}
	for _, name := range slices.Sorted(maps.Keys(des.Interfaces)) {
		ifc := des.Interfaces[name]
		if ifc == nil {
			continue
		}
		path := "interfaces" + index(name)
		if f := ifc.PrivateKeyFile; f != "" {
			k, err := ReadKeyFile(f)
			if err != nil {
				return nil, fmt.Errorf("%s.private_key_file: %w", path, err)
			}
			st.files[f] = keyFile{public: k.PublicKey().String()}
		}
		for _, pk := range slices.Sorted(maps.Keys(ifc.Peers)) {
			peer := ifc.Peers[pk]
			if peer == nil || peer.PresharedKeyFile == "" {
				continue
			}
			k, err := ReadKeyFile(peer.PresharedKeyFile)
			if err != nil {
				return nil, fmt.Errorf("%s.peers[%q].preshared_key_file: %w", path, pk, err)
			}
			st.files[peer.PresharedKeyFile] = keyFile{digest: digest(k)}
		}
	}
	return st, nil
}

func socketHint(err error) string {
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Net == "unix" {
		return " (a userspace WireGuard implementation's socket in /var/run/wireguard does not answer: is its process gone? remove the stale socket)"
	}
	if errors.Is(err, os.ErrPermission) {
		return " (run as root or with CAP_NET_ADMIN)"
	}
	return ""
}

// fromDevice turns a wgctrl device into state. The private and preshared
// keys stay behind: only the public key and whether a preshared key is set
// leave this function (plus an unexported digest for plan).
func fromDevice(d *wgtypes.Device) *Interface {
	ifc := &Interface{
		ListenPort: d.ListenPort,
		Peers:      make(map[string]*Peer, len(d.Peers)),
	}
	fw := d.FirewallMark
	ifc.FirewallMark = &fw
	var zero wgtypes.Key
	if d.PrivateKey != zero {
		ifc.PublicKey = d.PublicKey.String()
	}
	for _, dp := range d.Peers {
		peer := &Peer{
			AllowedIPs:          make([]string, 0, len(dp.AllowedIPs)),
			PersistentKeepalive: int(dp.PersistentKeepaliveInterval / time.Second),
		}
		if dp.Endpoint != nil {
			if ap, ok := addrPort(dp.Endpoint); ok {
				peer.Endpoint = ap.String()
			}
		}
		for _, n := range dp.AllowedIPs {
			if p, ok := prefix(n); ok {
				peer.AllowedIPs = append(peer.AllowedIPs, p.String())
			}
		}
		sort.Strings(peer.AllowedIPs)
		if dp.PresharedKey != zero {
			peer.HasPresharedKey = true
			peer.pskDigest = digest(dp.PresharedKey)
		}
		ifc.Peers[dp.PublicKey.String()] = peer
	}
	return ifc
}

func addrPort(u *net.UDPAddr) (netip.AddrPort, bool) {
	ap := u.AddrPort()
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

func prefix(n net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	if a.Is4In6() && ones >= 96 && len(n.Mask) == net.IPv6len {
		ones -= 96
	}
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}
