package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// WireGuard is a NetNS bed with one userspace WireGuard device per name:
// wireguard-go used as a library on a TUN device, answering the UAPI on
// /var/run/wireguard/NAME.sock, which inside the bed is on the bed's own
// tmpfs. It exists because a kernel without the wireguard link type (as on
// many CI machines) can still run the userspace implementation, and wgctrl
// and wg(8) speak to both alike.
//
// wgctrl finds userspace devices only below /var/run/wireguard of its own
// mount namespace, so whatever is to see the devices (the op-dbus binary,
// `wg show`, a test re-executed inside the bed) must run inside the bed:
// NetNS.Command, NetNS.Exec, WG.
//
// Each device is a process of its own: the test binary itself, re-executed
// with OPDBUS_TESTBED_WG_DEVICE=NAME in its environment, which this
// package's init turns into a WireGuard device before any test code runs.
// No separate program has to be built and no wireguard-go binary installed;
// the device is the library the Go toolchain already fetched for go.mod.
type WireGuard struct {
	*NetNS
	// Names are the devices, in the order given.
	Names []string
}

// wgDeviceEnv turns a process of a binary that imports testbed into a
// userspace WireGuard device named by its value (see init).
const wgDeviceEnv = "OPDBUS_TESTBED_WG_DEVICE"

func init() {
	if name := os.Getenv(wgDeviceEnv); name != "" {
		os.Exit(wireGuardDeviceMain(name))
	}
}

// wireGuardDeviceMain is what wireguard-go NAME does in the foreground:
// TUN device, WireGuard device on it, UAPI listener, link up. It returns
// only when the device or the listener fails (the bed's end kills it).
func wireGuardDeviceMain(name string) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "wireguard device %s: %s: %v\n", name, what, err)
		return 1
	}
	tdev, err := tun.CreateTUN(name, device.DefaultMTU)
	if err != nil {
		return fail("create TUN device (needs /dev/net/tun and CAP_NET_ADMIN)", err)
	}
	logger := device.NewLogger(device.LogLevelError, "("+name+") ")
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return fail("open UAPI socket in /var/run/wireguard", err)
	}
	l, err := ipc.UAPIListen(name, f)
	if err != nil {
		return fail("listen on UAPI socket", err)
	}
	errs := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				errs <- err
				return
			}
			go dev.IpcHandle(c)
		}
	}()
	// Up, as wg-quick would: the device binds its listen port once up.
	link, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		return fail("set link up", err)
	}
	select {
	case err := <-errs:
		return fail("UAPI listener", err)
	case <-dev.Wait():
		return fail("device", errors.New("closed"))
	}
}

// StartWireGuard starts a userspace WireGuard device name inside bed and
// waits until its UAPI socket answers.
func StartWireGuard(ctx context.Context, bed *NetNS, name string) error {
	if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t\n") {
		return fmt.Errorf("testbed: invalid WireGuard interface name %q", name)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("testbed: a userspace WireGuard device needs /dev/net/tun, which is missing (load the tun module: modprobe tun; in a container, pass --device /dev/net/tun): %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("testbed: find own executable to start a WireGuard device: %w", err)
	}
	logName := "wireguard-" + name
	// The -test.run argument is only a safety net: init runs the device
	// and exits before any test could start.
	if _, err := bed.Start(logName, bedEnv(wgDeviceEnv+"="+name), exe, "-test.run=^$"); err != nil {
		return err
	}
	sock := bed.WireGuardSocket(name)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = uapiPing(ctx, sock); lastErr == nil {
			return nil
		}
		// A device that cannot start says so in its log and exits.
		if log := bed.Log(logName); strings.Contains(log, "wireguard device "+name+":") {
			return fmt.Errorf("testbed: WireGuard device %s did not start: %s", name, log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testbed: WireGuard device %s: UAPI socket %s did not answer: %v (last: %v): %s", name, sock, ctx.Err(), lastErr, bed.Log(logName))
		case <-tick.C:
		}
	}
}

// WireGuardSocket is the host-side path of device name's UAPI socket: the
// bed's /var/run/wireguard/NAME.sock seen through /proc/PID/root.
func (n *NetNS) WireGuardSocket(name string) string {
	return filepath.Join("/proc", strconv.Itoa(n.PID()), "root", "run", "wireguard", name+".sock")
}

// uapiPing asks the device at sock for its configuration and expects
// errno=0, the UAPI's success line.
func uapiPing(ctx context.Context, sock string) error {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("get=1\n\n")); err != nil {
		return err
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "errno=") {
			if line != "errno=0" {
				return fmt.Errorf("UAPI answered %s", line)
			}
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("UAPI closed without errno line")
}

// NewWireGuard starts a NetNS bed for t with a userspace WireGuard device
// per name (wg(8) must be installed for the tests' oracle). Like the other
// beds it fails the test when CI=true and skips it otherwise if it cannot
// start.
func NewWireGuard(t testing.TB, names ...string) *WireGuard {
	t.Helper()
	if _, err := needProgram("wg", "wireguard-tools"); err != nil {
		unavailable(t, "a userspace WireGuard bed", err)
	}
	bed := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range names {
		if err := StartWireGuard(ctx, bed, name); err != nil {
			unavailable(t, "a userspace WireGuard device", err)
		}
	}
	return &WireGuard{NetNS: bed, Names: names}
}

// WG runs wg(8) with args inside the bed and returns its combined output:
// the oracle for WireGuard state (`wg show wg0 dump`).
func (w *WireGuard) WG(ctx context.Context, args ...string) (string, error) {
	return w.Exec(ctx, append([]string{"wg"}, args...)...)
}
