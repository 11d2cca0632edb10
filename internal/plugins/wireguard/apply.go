package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// Apply implements plugin.Plugin. Key files are read here, and only here,
// into memory that is cleared after the one ConfigureDevice call.
func (p *Plugin) Apply(ctx context.Context, op plugin.Op) error {
	var d opData
	if err := json.Unmarshal(op.Data, &d); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	if err := ValidInterfaceName(d.Interface); err != nil {
		return fmt.Errorf("bad op data: %w", err)
	}
	switch d.Kind {
	case kindCreate:
		return createLink(ctx, d.Interface)
	case kindConfigure:
		return p.configure(ctx, d)
	}
	return fmt.Errorf("unknown op kind %q", d.Kind)
}

func (p *Plugin) configure(ctx context.Context, d opData) error {
	c, err := p.wg()
	if err != nil {
		return err
	}
	cfg := wgtypes.Config{ListenPort: d.ListenPort, FirewallMark: d.FirewallMark}
	var secrets []*wgtypes.Key
	defer func() {
		for _, k := range secrets {
			clear(k[:])
		}
	}()
	if d.PrivateKeyFile != "" {
		k, err := ReadKeyFile(d.PrivateKeyFile)
		if err != nil {
			return fmt.Errorf("configure %s: %w", d.Interface, err)
		}
		if pub := k.PublicKey().String(); d.PublicKey != "" && pub != d.PublicKey {
			clear(k[:])
			return fmt.Errorf("configure %s: key file %s changed since the plan was made (its public key is now %s, the plan has %s); plan again", d.Interface, d.PrivateKeyFile, pub, d.PublicKey)
		}
		cfg.PrivateKey = &k
		secrets = append(secrets, &k)
	}
	for _, po := range d.Peers {
		pk, err := ParseKey(po.PublicKey)
		if err != nil {
			return fmt.Errorf("bad op data: peer %q: %w", po.PublicKey, err)
		}
		pc := wgtypes.PeerConfig{PublicKey: pk, Remove: po.Remove}
		if po.Remove {
			cfg.Peers = append(cfg.Peers, pc)
			continue
		}
		if po.Endpoint != "" {
			ap, err := ParseEndpoint(po.Endpoint)
			if err != nil {
				return fmt.Errorf("bad op data: peer %s: %w", po.PublicKey, err)
			}
			pc.Endpoint = net.UDPAddrFromAddrPort(ap)
		}
		if po.AllowedIPs != nil {
			pc.ReplaceAllowedIPs = true
			pc.AllowedIPs = make([]net.IPNet, 0, len(po.AllowedIPs))
			for _, a := range po.AllowedIPs {
				pfx, err := ParseAllowedIP(a)
				if err != nil {
					return fmt.Errorf("bad op data: peer %s: %w", po.PublicKey, err)
				}
				pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{
					IP:   pfx.Addr().AsSlice(),
					Mask: net.CIDRMask(pfx.Bits(), pfx.Addr().BitLen()),
				})
			}
		}
		if po.Keepalive != nil {
			ka := time.Duration(*po.Keepalive) * time.Second
			pc.PersistentKeepaliveInterval = &ka
		}
		if po.PresharedKeyFile != "" {
			k, err := ReadKeyFile(po.PresharedKeyFile)
			if err != nil {
				return fmt.Errorf("configure %s: peer %s: %w", d.Interface, po.PublicKey, err)
			}
			pc.PresharedKey = &k
			secrets = append(secrets, &k)
		}
		cfg.Peers = append(cfg.Peers, pc)
	}
	_, err = call(ctx, "configure WireGuard device "+d.Interface, func() (struct{}, error) {
		return struct{}{}, c.ConfigureDevice(d.Interface, cfg)
	})
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("configure %s: no WireGuard interface %s (it vanished, or is not a WireGuard link)", d.Interface, d.Interface)
	case err != nil:
		// wgctrl's errors carry no key material: they name the device
		// and the errno.
		return fmt.Errorf("configure %s: %w%s", d.Interface, err, socketHint(err))
	}
	return nil
}

// noKernelSupport is the error for creating an interface on a kernel
// without the wireguard link type.
func noKernelSupport(name string, err error) error {
	return fmt.Errorf("create WireGuard interface %s: this kernel has no wireguard link type; start a userspace implementation such as wireguard-go %s first (netlink: %v)", name, name, err)
}

// createLink adds a kernel WireGuard link and sets it up.
func createLink(ctx context.Context, name string) error {
	h, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("create WireGuard interface %s: open netlink: %w", name, err)
	}
	defer h.Close()
	timeout := CallTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := h.SetSocketTimeout(timeout); err != nil {
		return fmt.Errorf("create WireGuard interface %s: netlink timeout: %w", name, err)
	}
	err = h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name}})
	switch {
	case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOTSUP):
		return noKernelSupport(name, err)
	case errors.Is(err, syscall.EEXIST):
		return fmt.Errorf("create WireGuard interface %s: a link named %s exists but is not a WireGuard interface op-dbus can see (if it is a userspace one, its socket in /var/run/wireguard is missing)", name, name)
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("create WireGuard interface %s: %w (run as root or with CAP_NET_ADMIN)", name, err)
	case err != nil:
		return fmt.Errorf("create WireGuard interface %s: %w", name, err)
	}
	link, err := h.LinkByName(name)
	if err == nil {
		err = h.LinkSetUp(link)
	}
	if err != nil {
		return fmt.Errorf("set WireGuard interface %s up: %w", name, err)
	}
	return nil
}
