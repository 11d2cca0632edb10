package testbed

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// Two userspace devices answer wg(8) inside the bed, take configuration,
// exist as links only there, and vanish with the bed.
func TestWireGuardDevices(t *testing.T) {
	w := NewWireGuard(t, "wgtb0", "wgtb1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := w.WG(ctx, "show", "interfaces")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(out)
	slices.Sort(got)
	if len(got) != 2 || got[0] != "wgtb0" || got[1] != "wgtb1" {
		t.Fatalf("wg show interfaces inside the bed = %q, want wgtb0 wgtb1", out)
	}
	if _, err := w.WG(ctx, "set", "wgtb0", "listen-port", "51999"); err != nil {
		t.Fatal(err)
	}
	out, err = w.WG(ctx, "show", "wgtb0", "listen-port")
	if err != nil || strings.TrimSpace(out) != "51999" {
		t.Fatalf("listen port after wg set: %q, %v", out, err)
	}
	out, err = w.Exec(ctx, "ip", "-o", "link", "show", "wgtb0")
	if err != nil || !strings.Contains(out, "UP") {
		t.Errorf("wgtb0 link is not up in the bed: %q %v", out, err)
	}
	if _, err := os.Stat("/sys/class/net/wgtb0"); err == nil {
		t.Errorf("wgtb0 exists on the host")
	}
	if _, err := os.Stat("/var/run/wireguard/wgtb0.sock"); err == nil {
		t.Errorf("wgtb0's UAPI socket is in the host's /var/run/wireguard")
	}
	sock := w.WireGuardSocket("wgtb0")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := uapiPing(ctx, sock); err == nil {
		t.Errorf("device still answers after the bed closed")
	}
}

func TestWireGuardBadName(t *testing.T) {
	n := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"", "a/b", "sixteen-bytes-xx"} {
		if err := StartWireGuard(ctx, n, name); err == nil || !strings.Contains(err.Error(), "invalid WireGuard interface name") {
			t.Errorf("StartWireGuard(%q) = %v, want invalid name", name, err)
		}
	}
}
