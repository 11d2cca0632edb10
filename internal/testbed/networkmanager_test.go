package testbed

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NetworkManager in the bed answers nmcli over the private bus from the
// host, creates a bridge with an address that `ip -j addr` in the bed sees
// and the host does not, keeps its profiles in Dir, and is gone (with its
// links) after Close.
func TestNetworkManagerBed(t *testing.T) {
	n := NewNetworkManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := n.Nmcli(ctx, "-t", "-f", "RUNNING", "general"); err != nil || strings.TrimSpace(out) != "running" {
		t.Fatalf("nmcli general: %q, %v", out, err)
	}
	const br = "tbnmbr0"
	if out, err := n.Nmcli(ctx, "connection", "add", "type", "bridge", "con-name", br, "ifname", br,
		"ipv4.method", "manual", "ipv4.addresses", "10.98.0.1/24", "ipv6.method", "disabled"); err != nil {
		t.Fatalf("nmcli connection add: %v\n%s", err, out)
	}
	if _, err := os.Stat(n.KeyfileDir + "/" + br + ".nmconnection"); err != nil {
		t.Fatalf("profile not written to the bed's keyfile dir: %v", err)
	}
	// NetworkManager activates it by itself (autoconnect); wait for the
	// address.
	var addrs string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := n.Exec(ctx, "ip", "-j", "addr", "show", "dev", br)
		if err == nil {
			var links []struct {
				AddrInfo []struct {
					Local     string `json:"local"`
					Prefixlen int    `json:"prefixlen"`
				} `json:"addr_info"`
			}
			if json.Unmarshal([]byte(out), &links) == nil && len(links) == 1 {
				var got []string
				for _, a := range links[0].AddrInfo {
					got = append(got, a.Local)
				}
				addrs = strings.Join(got, ",")
				if strings.Contains(addrs, "10.98.0.1") {
					break
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(addrs, "10.98.0.1") {
		t.Fatalf("bridge %s has addresses %q, want 10.98.0.1\n%s", br, addrs, n.Log())
	}
	if _, err := os.Stat("/sys/class/net/" + br); err == nil {
		t.Fatalf("bridge %s made in the bed appeared on the host", br)
	}
	if h, _ := os.Hostname(); h != "" {
		if out, err := n.Exec(ctx, "hostname"); err != nil || strings.TrimSpace(out) != h {
			t.Errorf("bed hostname %q (%v), host %q", out, err, h)
		}
	}
	pid := n.PID()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("NetworkManager %d still alive after Close", pid)
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
