package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
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

// All four sources at once: NetworkManager's bed with ovsdb-server and
// ovs-vswitchd started in its namespaces. A bridge NetworkManager made and
// addressed, an OVS bridge and a port: netlink, sysfs, NetworkManager and
// OVSDB are all consulted and agree; then an address added behind
// NetworkManager's back on a device it does not manage is still seen the
// same by netlink and NetworkManager (it reads the kernel), while a port
// OVSDB declares but the kernel lacks is a disagreement.
func TestTestbedCheckNetworkFourSources(t *testing.T) {
	nm, env := nmBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := nm.Dir + "/ovs-conf.db"
	sock := nm.Dir + "/ovs-db.sock"
	if out, err := exec.CommandContext(ctx, "ovsdb-tool", "create", db, testbed.OVSSchema).CombinedOutput(); err != nil {
		t.Fatalf("ovsdb-tool create: %v %s", err, out)
	}
	if _, err := nm.Start("ovsdb-server", nil, "ovsdb-server", db, "--remote=punix:"+sock,
		"--unixctl="+nm.Dir+"/ovsdb.ctl", "--log-file="+nm.Dir+"/ovsdb.vlog"); err != nil {
		t.Fatal(err)
	}
	vsctl := func(args ...string) string {
		t.Helper()
		var out string
		var err error
		for i := 0; i < 100; i++ { // ovsdb-server may still be starting
			out, err = nm.Exec(ctx, append([]string{"ovs-vsctl", "--db=unix:" + sock, "--timeout=5"}, args...)...)
			if err == nil || !strings.Contains(out, "database connection failed") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("ovs-vsctl %v: %v", args, err)
		}
		return out
	}
	vsctl("--no-wait", "init")
	if _, err := nm.Start("ovs-vswitchd", nil, "ovs-vswitchd", "unix:"+sock,
		"--unixctl="+nm.Dir+"/vswitchd.ctl", "--log-file="+nm.Dir+"/vswitchd.vlog"); err != nil {
		t.Fatal(err)
	}
	vsctl("add-br", "obr0", "--", "set", "bridge", "obr0", "datapath_type=netdev")
	if out, err := nm.Nmcli(ctx, "connection", "add", "type", "bridge", "con-name", "nbr0", "ifname", "nbr0",
		"ipv4.method", "manual", "ipv4.addresses", "10.66.0.1/24", "ipv6.method", "disabled"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, err := nm.Nmcli(ctx, "--wait", "30", "connection", "up", "nbr0"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	runCheck := func() (result, checkReport) {
		t.Helper()
		r := runCmd(t, nm.Command(ctx, append(os.Environ(), env...), binary, "--state-dir="+t.TempDir(), "--ovsdb", "unix:"+sock, "check", "network", "-o", "json"))
		var rep checkReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("check network -o json: %v\n%s", err, r)
		}
		return r, rep
	}
	// vswitchd and NetworkManager settle their views of new devices
	// asynchronously; wait (bounded) for agreement.
	var r result
	var rep checkReport
	for deadline := time.Now().Add(45 * time.Second); ; {
		r, rep = runCheck()
		if r.code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	wantCode(t, r, 0, "check network with four sources")
	for _, s := range rep.Sources {
		if !s.Available {
			t.Errorf("source %s not consulted: %s", s.Name, s.Error)
		}
	}
	if len(rep.Sources) != 4 {
		t.Errorf("sources %+v", rep.Sources)
	}
	for _, want := range []string{"nbr0", "obr0"} {
		if !strings.Contains(" "+strings.Join(rep.Interfaces, " ")+" ", " "+want+" ") {
			t.Errorf("interfaces %v lack %s", rep.Interfaces, want)
		}
	}
	vsctl("add-port", "obr0", "ghost9")
	r, rep = runCheck()
	wantCode(t, r, 2, "check network with a ghost OVS port")
	found := false
	for _, d := range rep.Disagreements {
		if d.Interface == "ghost9" && d.Field == "exists" {
			found = d.Values["ovsdb"] == "present" && d.Values["netlink"] == "missing" && d.Values["networkmanager"] == "missing" && d.Values["sysfs"] == "missing"
		}
	}
	if !found {
		t.Errorf("ghost9 not reported as present in OVSDB and missing in the other three: %+v", rep.Disagreements)
	}
}
