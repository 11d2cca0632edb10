package testbed

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// The bed's links are its own: a bridge made inside is seen by `ip -j link`
// inside, through /sys/class/net inside, and not on the host; it is gone
// after Close.
func TestNetNSIsolated(t *testing.T) {
	n := NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const br = "tbtestbr0"
	if _, err := n.Exec(ctx, "ip", "link", "add", br, "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	out, err := n.Exec(ctx, "ip", "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name  string   `json:"ifname"`
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatalf("ip -j link: %v\n%s", err, out)
	}
	names := map[string]bool{}
	for _, l := range links {
		names[l.Name] = true
		if l.Name == "lo" && !strings.Contains(strings.Join(l.Flags, ","), "UP") {
			t.Errorf("lo is not up in the bed: %v", l.Flags)
		}
	}
	if !names["lo"] || !names[br] || len(names) != 2 {
		t.Fatalf("bed links = %v, want lo and %s only", names, br)
	}
	if sys, err := n.Exec(ctx, "ls", "/sys/class/net"); err != nil || !strings.Contains(sys, br) {
		t.Fatalf("/sys/class/net inside the bed: %q, %v", sys, err)
	}
	if _, err := os.Stat("/sys/class/net/" + br); err == nil {
		t.Fatalf("bridge %s made in the bed appeared on the host", br)
	}
	if _, err := os.Stat(n.NetNSPath()); err != nil {
		t.Fatal(err)
	}
	cmd, err := n.Start("sleeper", nil, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if cmd.ProcessState == nil {
		t.Errorf("Start's process was not reaped by Close")
	}
}
