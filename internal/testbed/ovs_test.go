package testbed

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// With ovs-vswitchd, a netdev bridge made through the bed's database is a
// real device inside the bed (seen by ip -j link there) and not on the
// host; after Close the daemons are gone and the socket answers no more.
func TestOVSBridgeIsADeviceInTheBed(t *testing.T) {
	o := NewOVS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const br = "tbovsbr0"
	if _, err := o.Vsctl(ctx, "add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev"); err != nil {
		t.Fatal(err)
	}
	show, err := o.Vsctl(ctx, "show")
	if err != nil || !strings.Contains(show, `Bridge `+br) {
		t.Fatalf("ovs-vsctl show = %q, %v", show, err)
	}
	out, err := o.NetNS.Exec(ctx, "ip", "-j", "link", "show", "dev", br)
	if err != nil {
		t.Fatalf("%s is not a device in the bed: %v\n%s", br, err, o.Log("ovs-vswitchd"))
	}
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || links[0].Name != br {
		t.Fatalf("ip -j link show dev %s = %s (%v)", br, out, err)
	}
	if _, err := os.Stat("/sys/class/net/" + br); err == nil {
		t.Fatalf("bridge %s made in the bed appeared on the host", br)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Vsctl(ctx, "show"); err == nil {
		t.Fatal("ovs-vsctl still works after Close")
	}
}

// OVSDBOnly: the database works (ovs-vsctl --no-wait), nothing acts on it.
func TestOVSDBOnly(t *testing.T) {
	o := NewOVS(t, OVSDBOnly())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if o.Vswitchd {
		t.Fatal("Vswitchd true with OVSDBOnly")
	}
	if _, err := o.Vsctl(ctx, "add-br", "tbdbonly0"); err != nil {
		t.Fatal(err)
	}
	out, err := o.Vsctl(ctx, "list-br")
	if err != nil || strings.TrimSpace(out) != "tbdbonly0" {
		t.Fatalf("list-br = %q, %v", out, err)
	}
	if _, err := o.NetNS.Exec(ctx, "ip", "link", "show", "dev", "tbdbonly0"); err == nil {
		t.Fatal("a device appeared without ovs-vswitchd")
	}
	if !strings.HasPrefix(o.DBAddress, "unix:"+o.Dir) {
		t.Fatalf("DBAddress %q not under %s", o.DBAddress, o.Dir)
	}
}
