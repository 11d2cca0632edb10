package main

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

type checkReport struct {
	Sources []struct {
		Name       string `json:"name"`
		Available  bool   `json:"available"`
		Error      string `json:"error"`
		Interfaces int    `json:"interfaces"`
	} `json:"sources"`
	Interfaces    []string `json:"interfaces"`
	Disagreements []struct {
		Interface string            `json:"interface"`
		Field     string            `json:"field"`
		Values    map[string]string `json:"values"`
	} `json:"disagreements"`
}

func bedExec(t *testing.T, n *testbed.NetNS, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := n.Exec(ctx, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// `op-dbus check network` inside a namespace with ovsdb-server and
// ovs-vswitchd: netlink, sysfs and OVSDB agree on a healthy setup (a
// NetworkManager that is not running is reported, not compared); a port
// OVSDB declares but the kernel lacks, and a device that OVSDB puts on an
// OVS bridge while the kernel has it in a Linux bridge, are disagreements
// with each source's value, exit 2.
func TestTestbedCheckNetwork(t *testing.T) {
	o := testbed.NewOVS(t)
	n := o.NetNS
	ovsctl(t, o, "add-br", "obr0", "--", "set", "bridge", "obr0", "datapath_type=netdev")
	bedExec(t, n, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	bedExec(t, n, "ip", "link", "set", "v0", "up")
	ovsctl(t, o, "add-port", "obr0", "v0")
	bedExec(t, n, "ip", "link", "add", "lbr0", "type", "bridge")
	// The system bus of the host is not the bed's: point NetworkManager's
	// plugin at a bus that does not exist, so it is "not consulted".
	env := []string{"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + o.Dir + "/no-such-bus"}

	check := func(settle bool, args ...string) (result, checkReport) {
		t.Helper()
		var r result
		deadline := time.Now().Add(30 * time.Second)
		for {
			r = runInBedEnv(t, n, env, append([]string{"--ovsdb", o.DBAddress, "check", "network"}, args...)...)
			// vswitchd fills OVSDB's mtu and admin_state columns shortly
			// after a change; give a settling change a moment.
			if !settle || r.code == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		var rep checkReport
		if len(args) > 0 && args[len(args)-1] == "json" {
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("check network -o json: %v\n%s", err, r)
			}
		}
		return r, rep
	}
	r, _ := check(true)
	wantCode(t, r, 0, "check network on a consistent namespace")
	if !strings.Contains(r.stdout, "All 3 sources agree") {
		t.Errorf("check network output:\n%s", r.stdout)
	}
	r, rep := check(false, "-o", "json")
	avail := map[string]bool{}
	for _, s := range rep.Sources {
		avail[s.Name] = s.Available
		if s.Name == "networkmanager" && (s.Available || s.Error == "") {
			t.Errorf("networkmanager should be reported as not consulted, with why: %+v", s)
		}
	}
	if !avail["netlink"] || !avail["sysfs"] || !avail["ovsdb"] {
		t.Fatalf("sources %+v", rep.Sources)
	}
	for _, want := range []string{"obr0", "v0", "v1", "lbr0", "lo"} {
		if !strings.Contains(" "+strings.Join(rep.Interfaces, " ")+" ", " "+want+" ") {
			t.Errorf("interfaces %v lack %s", rep.Interfaces, want)
		}
	}

	// Now two real disagreements.
	ovsctl(t, o, "add-port", "obr0", "ghost0")
	bedExec(t, n, "ip", "link", "add", "v2", "type", "veth", "peer", "name", "v3")
	bedExec(t, n, "ip", "link", "set", "v2", "master", "lbr0")
	ovsctl(t, o, "add-port", "obr0", "v2")
	r, rep = check(false, "-o", "json")
	wantCode(t, r, 2, "check network with disagreements")
	got := map[string]map[string]string{}
	for _, d := range rep.Disagreements {
		got[d.Interface+"."+d.Field] = d.Values
	}
	if v := got["ghost0.exists"]; v["ovsdb"] != "present" || v["netlink"] != "missing" || v["sysfs"] != "missing" {
		t.Errorf("ghost0.exists: %v (all: %v)", v, got)
	}
	if v := got["v2.master"]; v["ovsdb"] != "obr0" || v["netlink"] != "lbr0" || v["sysfs"] != "lbr0" {
		t.Errorf("v2.master: %v (all: %v)", v, got)
	}
	// The oracle agrees with the kernel's side of it.
	if out := bedExec(t, n, "ip", "-j", "link", "show", "v2"); !strings.Contains(out, `"master":"lbr0"`) {
		t.Errorf("ip -j link show v2: %s", out)
	}
	// MCP's check_network is the CLI's: same disagreements, same values.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mcmd := n.Command(ctx, append(os.Environ(), env...), binary, "--state-dir="+t.TempDir(), "--ovsdb", o.DBAddress, "mcp")
	mc := mcp.NewClient(&mcp.Implementation{Name: "op-dbus-e2e", Version: "0.1"}, nil)
	cs, err := mc.Connect(ctx, &mcp.CommandTransport{Command: mcmd}, nil)
	if err != nil {
		t.Fatalf("op-dbus mcp in the bed: %v", err)
	}
	defer cs.Close()
	var mrep checkReport
	mcpCall(t, cs, "check_network", map[string]any{}, &mrep)
	if !reflect.DeepEqual(mrep.Disagreements, rep.Disagreements) {
		t.Errorf("check_network over MCP:\n%+v\nCLI check network -o json:\n%+v", mrep.Disagreements, rep.Disagreements)
	}

	r, _ = check(false)
	wantCode(t, r, 2, "check network (text)")
	for _, want := range []string{"INTERFACE", "FIELD", "NETLINK", "OVSDB", "ghost0", "exists", "present", "missing", "v2", "master", "lbr0", "disagreement(s)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, r.stdout)
		}
	}
}
