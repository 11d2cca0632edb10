package main

import (
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// One document across plugins: ovs creates a bridge (ovs-vswitchd makes
// its device) and network addresses it, in one apply, in declared order
// (ovs before network). ip -j and ovs-vsctl are the oracles.
func TestTestbedNetworkOnOVSBridgeInOneApply(t *testing.T) {
	o := testbed.NewOVS(t)
	n := o.NetNS
	dir := t.TempDir()
	doc := writeFile(t, dir, "net.json", `{"version":1,"plugins":{
  "ovs": {"bridges": {"obr1": {"datapath_type": "netdev", "ports": {"vp1": {"interfaces": {"vp1": {"type": "internal"}}}}}}},
  "network": {"interfaces": [
    {"name": "obr1", "state": "up", "ipv4": {"address": [{"ip": "10.77.0.1", "prefix_length": 24}]}},
    {"name": "vp1", "state": "up", "mtu": 1400}
  ]}}}`)
	sd := "--state-dir=" + dir + "/state"
	r := runInBed(t, n, sd, "--ovsdb", o.DBAddress, "diff", "-o", "json", doc)
	wantCode(t, r, 2, "diff")
	ovsAt, netAt := strings.Index(r.stdout, `"plugin": "ovs"`), strings.Index(r.stdout, `"plugin": "network"`)
	if ovsAt < 0 || netAt < 0 || ovsAt > netAt {
		t.Errorf("plan does not put ovs before network:\n%s", r.stdout)
	}
	r = runInBed(t, n, sd, "--ovsdb", o.DBAddress, "apply", "--yes", doc)
	wantCode(t, r, 0, "apply ovs bridge + network address")
	if out := ovsctl(t, o, "list-ports", "obr1"); out != "vp1" {
		t.Errorf("ovs-vsctl list-ports obr1 = %q", out)
	}
	addr := bedExec(t, n, "ip", "-j", "addr", "show", "dev", "obr1")
	if !strings.Contains(addr, `"local":"10.77.0.1","prefixlen":24`) {
		t.Errorf("ip -j addr show dev obr1: %s", addr)
	}
	if link := bedExec(t, n, "ip", "-j", "link", "show", "vp1"); !strings.Contains(link, `"mtu":1400`) {
		t.Errorf("ip -j link show vp1: %s", link)
	}
	r = runInBed(t, n, sd, "--ovsdb", o.DBAddress, "diff", doc)
	wantCode(t, r, 0, "diff after apply")
}
