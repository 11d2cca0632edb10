package testbed

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// MoveLink moves the link name from bed from into bed to's network
// namespace, the way `ip link set NAME netns` does, for tests that need a
// second host on the other end of a veth pair. The link keeps its name and
// is down in its new namespace.
func MoveLink(from *NetNS, name string, to *NetNS) error {
	src, err := netns.GetFromPath(from.NetNSPath())
	if err != nil {
		return fmt.Errorf("open source namespace: %w", err)
	}
	defer src.Close()
	h, err := netlink.NewHandleAt(src, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in source namespace: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(10e9); err != nil {
		return err
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	dst, err := os.Open(to.NetNSPath())
	if err != nil {
		return fmt.Errorf("open target namespace: %w", err)
	}
	defer dst.Close()
	if err := h.LinkSetNsFd(l, int(dst.Fd())); err != nil {
		return fmt.Errorf("move %s to the other namespace: %w", name, err)
	}
	return nil
}
