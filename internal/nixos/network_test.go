package nixos

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/plugins/network"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// networkGoldens are the network golden cases: testdata/golden/NAME holds
// input.json (a state document) and the files generated from it. The value
// is the Source: "" for a written document (its path), "the live host"
// for a captured one (MACs and default MTUs are then not pinned).
var networkGoldens = map[string]string{
	"network-doc":  "",
	"network-nm":   "",
	"network-live": "the live host",
	"network-ovs":  "the live host",
}

func networkInput(t *testing.T, name string) Input {
	t.Helper()
	p := filepath.Join("testdata", "golden", name, "input.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	src := networkGoldens[name]
	if src == "" {
		src = "the state document " + filepath.ToSlash(p)
	}
	return Input{Doc: b, Source: src, System: "x86_64-linux"}
}

func TestNetworkGolden(t *testing.T) {
	for name := range networkGoldens {
		t.Run(name, func(t *testing.T) {
			in := networkInput(t, name)
			files, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "golden", name)
			if *update {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if e.Name() != "input.json" {
						os.Remove(filepath.Join(dir, e.Name()))
					}
				}
				if err := WriteDir(dir, files, true); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range files.Names() {
				want, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatalf("%v (run go test -update)", err)
				}
				if string(want) != string(files[n]) {
					t.Errorf("%s differs from %s (go test -update to accept):\n%s", n, dir, files[n])
				}
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != len(files)+1 {
				t.Errorf("%s holds %d files, want the generator's %d and input.json", dir, len(ents), len(files))
			}
		})
	}
}

// Same state, same bytes: generating twice, and from the same document
// with its keys in another order, gives identical files.
func TestNetworkDeterministic(t *testing.T) {
	for name := range networkGoldens {
		t.Run(name, func(t *testing.T) {
			in := networkInput(t, name)
			a, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := Generate(in)
			// Re-encoding sorts every object's keys, unlike input.json.
			var v any
			if err := json.Unmarshal(in.Doc, &v); err != nil {
				t.Fatal(err)
			}
			in.Doc, _ = json.Marshal(v)
			if bytes.Equal(networkInput(t, name).Doc, in.Doc) {
				t.Fatal("re-encoding did not change the document; the test would prove nothing")
			}
			c, err := Generate(in)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range a.Names() {
				if !bytes.Equal(a[n], b[n]) || !bytes.Equal(a[n], c[n]) {
					t.Errorf("%s: not deterministic", n)
				}
			}
		})
	}
}

// nixModule evaluates a generated module file (a function of { ... }) to
// JSON: every value must evaluate, not only parse.
func nixModule(t *testing.T, path string) map[string]any {
	t.Helper()
	abs, _ := filepath.Abs(path)
	cmd := exec.Command(needNix(t), "--eval", "--strict", "--json", "--expr", "import "+abs+" { }")
	cmd.Env = append(os.Environ(), "NIX_STATE_DIR="+t.TempDir(), "HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nix-instantiate --eval %s: %v\n%s", path, err, stderr.String())
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return v
}

// at walks a JSON tree by attribute names.
func at(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Every generated file parses, network.nix evaluates, and what it sets is
// what each mapping promises.
func TestNetworkGoldenNixEvaluates(t *testing.T) {
	needNix(t)
	mods := map[string]map[string]any{}
	for name := range networkGoldens {
		files, err := Generate(networkInput(t, name))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := WriteDir(dir, files, false); err != nil {
			t.Fatal(err)
		}
		for _, n := range files.Names() {
			if strings.HasSuffix(n, ".nix") {
				nixParse(t, filepath.Join(dir, n))
			}
		}
		mods[name] = nixModule(t, filepath.Join(dir, "network.nix"))["networking"].(map[string]any)
	}
	for _, c := range []struct {
		name string
		path []string
		want string
	}{
		// network plugin, written document.
		{"network-doc", []string{"bridges", "br0", "interfaces"}, `["eth1","va"]`},
		{"network-doc", []string{"bonds", "bond0"}, `{"driverOptions":{"mode":"802.3ad"},"interfaces":["eth2","eth3"]}`},
		{"network-doc", []string{"vlans", "eth0.10"}, `{"id":10,"interface":"eth0"}`},
		{"network-doc", []string{"interfaces", "br0", "ipv4", "addresses"}, `[{"address":"10.99.0.1","prefixLength":24},{"address":"10.99.1.1","prefixLength":24}]`},
		{"network-doc", []string{"interfaces", "br0", "ipv6", "addresses"}, `[{"address":"2001:db8::1","prefixLength":64}]`},
		{"network-doc", []string{"interfaces", "br0", "macAddress"}, `"02:00:00:00:00:01"`},
		{"network-doc", []string{"interfaces", "eth0", "mtu"}, `9000`},
		{"network-doc", []string{"interfaces", "eth0", "macAddress"}, `"52:54:00:12:34:56"`},
		{"network-doc", []string{"interfaces", "lo", "ipv4", "addresses"}, `[{"address":"10.255.255.1","prefixLength":32}]`},
		{"network-doc", []string{"interfaces", "lo", "ipv6"}, `null`},
		{"network-doc", []string{"interfaces", "lo", "mtu"}, `65536`},
		{"network-doc", []string{"defaultGateway"}, `{"address":"192.0.2.1","interface":"eth0","metric":100}`},
		{"network-doc", []string{"defaultGateway6"}, `{"address":"2001:db8::fffe","interface":"br0"}`},
		{"network-doc", []string{"interfaces", "br0", "ipv4", "routes"}, `[{"address":"0.0.0.0","options":{"metric":"200"},"prefixLength":0,"via":"10.99.0.254"},{"address":"10.6.0.0","options":{"table":"100"},"prefixLength":24},{"address":"10.8.0.0","options":{"src":"10.99.0.1"},"prefixLength":16,"via":"10.99.0.254"}]`},
		{"network-doc", []string{"interfaces", "br0", "ipv6", "routes"}, `[{"address":"2001:db8:1::","options":{"metric":"10"},"prefixLength":48,"via":"2001:db8::2"}]`},
		{"network-doc", []string{"interfaces", "vx0"}, `null`},
		{"network-doc", []string{"interfaces", "old0"}, `null`},
		{"network-doc", []string{"networkmanager"}, `null`},
		// captured: no kernel MACs, no default MTUs, no loopback addresses,
		// no routes networking.wireguard makes itself.
		{"network-live", []string{"bridges", "br0", "interfaces"}, `["va"]`},
		{"network-live", []string{"interfaces", "br0"}, `{"ipv4":{"addresses":[{"address":"10.99.0.1","prefixLength":24}],"routes":[{"address":"10.30.0.0","prefixLength":24,"via":"10.99.0.254"}]}}`},
		{"network-live", []string{"interfaces", "eth0"}, `{"ipv4":{"addresses":[{"address":"192.0.2.10","prefixLength":24}]},"ipv6":{"addresses":[{"address":"2001:db8:5::10","prefixLength":64}]},"macAddress":"52:54:00:aa:bb:cc"}`},
		{"network-live", []string{"interfaces", "vb"}, `{"mtu":1400}`},
		{"network-live", []string{"interfaces", "wg0"}, `{"ipv4":{"addresses":[{"address":"10.10.0.1","prefixLength":24}]}}`},
		{"network-live", []string{"interfaces", "lo"}, `null`},
		{"network-live", []string{"interfaces", "va"}, `null`},
		{"network-live", []string{"interfaces", "ovs-system"}, `null`},
		{"network-live", []string{"defaultGateway"}, `{"address":"192.0.2.1","interface":"eth0"}`},
		{"network-live", []string{"defaultGateway6"}, `{"address":"2001:db8:5::1","interface":"eth0"}`},
		{"network-live", []string{"wireguard", "interfaces", "wg0", "peers"}, `[{"allowedIPs":["10.10.1.0/24"],"endpoint":"192.0.2.77:51820","publicKey":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="}]`},
		// NetworkManager: profiles in keyfile form; the links they describe
		// are not also networking.interfaces; the rest is unmanaged.
		{"network-nm", []string{"networkmanager", "enable"}, `true`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "br9"}, `{"bridge":{"stp":false},"connection":{"autoconnect":true,"id":"br9","interface-name":"br9","type":"bridge","uuid":"0ca700c5-969a-4ecd-a9bc-1edb2f1c4391"},"ethernet":{"mtu":1500},"ipv4":{"address1":"10.99.0.1/24","address2":"10.99.1.1/24","dns":"10.99.0.53;10.99.0.54;","gateway":"10.99.0.254","method":"manual"},"ipv6":{"method":"disabled"}}`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "br9-port"}, `{"connection":{"autoconnect":true,"id":"br9-port","interface-name":"vp0","master":"br9","slave-type":"bridge","type":"veth"},"veth":{"peer":"vp1"}}`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "Wired-connection-1", "connection"}, `{"autoconnect":false,"id":"Wired connection 1","interface-name":"eth0","type":"ethernet"}`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "Wired-connection-1", "ipv6"}, `{"address1":"fd00::10/64","method":"auto"}`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "6b8d0ff7-8d2a-4c39-9d4c-1f0b1c8f0a11", "connection", "id"}, `"dup"`},
		{"network-nm", []string{"networkmanager", "ensureProfiles", "profiles", "old-wifi"}, `null`},
		{"network-nm", []string{"networkmanager", "unmanaged"}, `["interface-name:br5","interface-name:eth5","interface-name:eth6"]`},
		{"network-nm", []string{"interfaces"}, `{"eth5":{"ipv4":{"addresses":[{"address":"198.51.100.5","prefixLength":24}],"routes":[{"address":"203.0.113.0","prefixLength":24,"via":"198.51.100.1"}]}}}`},
		{"network-nm", []string{"bridges"}, `{"br5":{"interfaces":["eth6"]}}`},
		{"network-nm", []string{"defaultGateway"}, `null`},
		// Open vSwitch.
		{"network-ovs", []string{"vswitches", "br-ex", "interfaces"}, `{"p1":{"name":"p1","vlan":10},"trk":{"name":"trk","type":"internal"}}`},
		{"network-ovs", []string{"vswitches", "br1", "interfaces"}, `{}`},
		{"network-ovs", []string{"vswitches", "br1", "extraOvsctlCmds"}, `"add-port br1 to-br-ex\nset Interface to-br-ex type=patch\nset Interface to-br-ex options:peer=to-br1"`},
		{"network-ovs", []string{"interfaces"}, `{"br-ex":{"ipv4":{"addresses":[{"address":"10.20.0.1","prefixLength":24}]},"mtu":9000},"p1":{"macAddress":"52:54:00:00:00:01"}}`},
	} {
		if got := jsonOf(at(mods[c.name], c.path...)); got != c.want {
			t.Errorf("%s: networking.%s = %s, want %s", c.name, strings.Join(c.path, "."), got, c.want)
		}
	}
}

// The REPORT names every network choice: what was mapped and what was left
// out, with the reason.
func TestNetworkReportRecordsChoices(t *testing.T) {
	report := func(name string) string {
		files, err := Generate(networkInput(t, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(files["REPORT.md"])
	}
	for name, wants := range map[string][]string{
		"network-doc": {
			"- network.interfaces br0 (bridge, ports: eth1, va) → `networking.bridges.br0.interfaces (in network.nix)`",
			"- network.interfaces va (veth): NixOS has no option that creates a veth pair",
			"- network.interfaces vx0 (vxlan): no networking.* option creates a VXLAN link",
			"- network.interfaces d0 state down: NixOS has no option to keep a link down",
			"- network.interfaces old0: state absent",
			"- network.interfaces x0 controller ghost: the controller is not in the state",
			"- network.routes.config[5] 10.7.0.0/24 (blackhole): NixOS's per-interface routes cannot be blackhole routes",
			"- network.routes.config[6] 10.9.0.0/24: no outgoing link",
			"- network.routes.config[0] 0.0.0.0/0 via 192.0.2.1 → `networking.defaultGateway (in network.nix)`",
			"- NetworkManager profiles: the state has no networkmanager part",
			"- Open vSwitch bridges: the state has no ovs part",
		},
		"network-live": {
			"- network.interfaces br0 mac_address: a query reports the MAC the kernel gave this bridge link",
			"- network.interfaces va mac_address:",
			"- network.routes.config[1] 10.10.1.0/24 dev wg0: networking.wireguard.interfaces.wg0 adds it",
			"- network.interfaces ovs-system: Open vSwitch's datapath device",
			"- network.interfaces br-ex (openvswitch): the ovs plugin's state is missing",
		},
		"network-nm": {
			"- network.interfaces br9: NetworkManager profile \"br9\" describes it; the profile wins",
			"- network.interfaces eth0: NetworkManager profile \"Wired connection 1\" describes it",
			"- network.routes.config[0] 0.0.0.0/0 dev eth0: NetworkManager profile \"Wired connection 1\" owns the link",
			"- networkmanager.connections.old-wifi: state absent",
			"- networkmanager.connections.br9.active: no keyfile setting",
			"- networkmanager.connections.Wired connection 1 → `networking.networkmanager.ensureProfiles.profiles.Wired-connection-1 (in network.nix)`",
			"→ `networking.networkmanager.unmanaged (in network.nix), so NetworkManager does not fight them`",
		},
		"network-ovs": {
			"- ovs.bridges.br-ex (ports: p1, to-br1, trk, vx; fail_mode, datapath_type, external_ids, other_config in extraOvsctlCmds) → `networking.vswitches.br-ex (in network.nix)`",
			"- ovs.bridges.br-ex.ports.bond0: a port whose interfaces (eth7, eth8) are not one of its own name (a bond)",
			"- ovs.bridges.br-ex.ports.old: state absent",
			"- network.interfaces br-ex mac_address:",
		},
	} {
		r := report(name)
		for _, w := range wants {
			if !strings.Contains(r, w) {
				t.Errorf("%s: REPORT.md lacks %q:\n%s", name, w, r)
			}
		}
		if strings.Contains(r, "no op-dbus plugin reads them yet") {
			t.Errorf("%s: REPORT.md still says no plugin reads the network", name)
		}
	}
}

// Nothing secret reaches network.nix or REPORT.md, even when a document
// carries secret-looking settings the plugins do not model.
func TestNetworkNoSecrets(t *testing.T) {
	const secret = "hunter2-Sup3rSecret"
	doc := `{"version":1,"plugins":{"networkmanager":{"connections":{"home":{"type":"wifi","interface_name":"wlan0",
		"wifi-security":{"psk":"` + secret + `"},"802-1x":{"password":"` + secret + `"},"psk":"` + secret + `",
		"ipv4":{"method":"auto","password":"` + secret + `"}}}},
		"network":{"interfaces":[{"name":"eth0","psk":"` + secret + `","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24}]}}]},
		"ovs":{"bridges":{"br0":{"ports":{"p":{"interfaces":{"p":{"type":"system","options":{"psk":"` + secret + `"}}}}},"secret":"` + secret + `"}}}}}`
	files, err := Generate(Input{Doc: []byte(doc), Source: "doc.json"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"network.nix", "REPORT.md"} {
		f := string(files[n])
		// The OVS interface's options map is modelled (a tunnel key is an
		// option); only that one may carry the value.
		f = strings.Replace(f, `set Interface p options:psk=`+secret, "", 1)
		if strings.Contains(f, secret) {
			t.Errorf("%s holds a secret:\n%s", n, f)
		}
		for _, w := range []string{"password", "wifi-security", "802-1x"} {
			if strings.Contains(f, w) {
				t.Errorf("%s mentions %s:\n%s", n, w, f)
			}
		}
	}
	if !strings.Contains(string(files["network.nix"]), "environmentFiles") {
		t.Error("network.nix does not say where secrets go")
	}
}

func TestShellAndOVSQuoting(t *testing.T) {
	for _, c := range [][2]string{
		{"plain", "plain"}, {"a b", "'a b'"}, {"it's", `'it'\''s'`}, {"$(x)", "'$(x)'"}, {"", "''"},
		{"external_ids:k=v", "external_ids:k=v"},
	} {
		if got := shWord(c[0]); got != c[1] {
			t.Errorf("shWord(%q) = %s, want %s", c[0], got, c[1])
		}
	}
	for _, c := range [][2]string{{"uplink", "uplink"}, {"a b", `"a b"`}, {`q"`, `"q\""`}, {"", `""`}, {"a=b", `"a=b"`}, {"<&>", `"<&>"`}} {
		if got := ovsAtom(c[0]); got != c[1] {
			t.Errorf("ovsAtom(%q) = %s, want %s", c[0], got, c[1])
		}
	}
}

// The vswitch part of network.nix, run the way NixOS's network scripts run
// it (ovs-vsctl add-br, then one ovs-vsctl with add-port per interface,
// set interface type, and each extraOvsctlCmds line after " -- ", pasted
// into a bash script) against a real ovsdb-server, builds what the state
// says. ovs-vsctl reading the database back is the oracle.
func TestVswitchCommandsBuildTheBridges(t *testing.T) {
	needNix(t)
	in := networkInput(t, "network-ovs")
	files, err := Generate(in)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteDir(dir, files, false); err != nil {
		t.Fatal(err)
	}
	mod := nixModule(t, filepath.Join(dir, "network.nix"))
	switches := at(mod, "networking", "vswitches").(map[string]any)

	o := testbed.NewOVS(t, testbed.OVSDBOnly())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var script strings.Builder
	script.WriteString("set -e\novs-vsctl() { command ovs-vsctl --db=" + o.DBAddress + " --no-wait --timeout=20 \"$@\"; }\n")
	for _, n := range slices.Sorted(maps.Keys(switches)) {
		v := switches[n].(map[string]any)
		script.WriteString("ovs-vsctl --if-exists del-br " + n + " -- add-br " + n + " -- set bridge " + n + " protocols=OpenFlow13\n")
		script.WriteString("ovs-vsctl")
		ifs := v["interfaces"].(map[string]any)
		for _, name := range slices.Sorted(maps.Keys(ifs)) {
			i := ifs[name].(map[string]any)
			script.WriteString(" -- add-port " + n + " " + name)
			if vl, ok := i["vlan"]; ok && vl != nil {
				script.WriteString(" tag=" + jsonOf(vl))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(ifs)) {
			if ty, ok := ifs[name].(map[string]any)["type"].(string); ok {
				script.WriteString(" -- set interface " + name + " type=" + ty)
			}
		}
		if x, ok := v["extraOvsctlCmds"].(string); ok {
			for _, l := range strings.Split(x, "\n") {
				script.WriteString(" -- " + l)
			}
		}
		script.WriteString("\n")
	}
	if out, err := o.NetNS.Exec(ctx, "bash", "-c", script.String()); err != nil {
		t.Fatalf("the vswitch script failed: %v\n%s\n%s", err, out, script.String())
	}
	get := func(args ...string) string {
		t.Helper()
		out, err := o.Vsctl(ctx, args...)
		if err != nil {
			t.Fatalf("ovs-vsctl %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"list-br"}, "br-ex\nbr1"},
		{[]string{"list-ports", "br-ex"}, "p1\nto-br1\ntrk\nvx"},
		{[]string{"list-ports", "br1"}, "to-br-ex"},
		{[]string{"get-fail-mode", "br-ex"}, "secure"},
		{[]string{"get-fail-mode", "br1"}, ""},
		{[]string{"get", "Bridge", "br-ex", "datapath_type"}, "netdev"},
		{[]string{"get", "Bridge", "br-ex", "other_config:hwaddr"}, `"02:00:00:00:00:99"`},
		{[]string{"get", "Port", "p1", "tag"}, "10"},
		{[]string{"get", "Port", "trk", "trunks"}, "[20, 30]"},
		{[]string{"get", "Interface", "trk", "type"}, "internal"},
		{[]string{"get", "Interface", "br-ex", "mtu_request"}, "9000"},
		{[]string{"get", "Interface", "to-br1", "type"}, "patch"},
		{[]string{"get", "Interface", "to-br1", "options:peer"}, "to-br-ex"},
		{[]string{"get", "Interface", "to-br-ex", "options:peer"}, "to-br1"},
		{[]string{"get", "Interface", "vx", "type"}, "vxlan"},
		{[]string{"get", "Interface", "vx", "options"}, `{key="42", remote_ip="192.0.2.1"}`},
	} {
		if got := get(c.args...); got != c.want {
			t.Errorf("ovs-vsctl %s = %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	// The awkward external_ids come back byte for byte (no shell
	// expansion, no OVS parsing surprise).
	var want map[string]any
	if err := json.Unmarshal(in.Doc, &want); err != nil {
		t.Fatal(err)
	}
	ids := at(want, "plugins", "ovs", "bridges", "br-ex", "external_ids").(map[string]any)
	out := get("--format=json", "--columns=external_ids", "list", "Bridge", "br-ex")
	var tbl struct{ Data [][]any }
	if err := json.Unmarshal([]byte(out), &tbl); err != nil || len(tbl.Data) != 1 {
		t.Fatalf("ovs-vsctl list: %v\n%s", err, out)
	}
	got := map[string]any{}
	for _, kv := range tbl.Data[0][0].([]any)[1].([]any) {
		p := kv.([]any)
		got[p[0].(string)] = p[1]
	}
	if !reflect.DeepEqual(got, ids) {
		t.Errorf("external_ids = %v, want %v", got, ids)
	}
	if pid := get("get", "Port", "trk", "external_ids:owner"); pid != `"vm 7"` {
		t.Errorf("trk external_ids:owner = %s", pid)
	}
}

// Generating from a live query works: a bridge with a veth port, an
// address and routes made with ip(8) in a bed, queried in-process by the
// network plugin, become networking.bridges, networking.interfaces and
// networking.defaultGateway, checked against `ip -j` in the bed.
func TestNetworkFromLiveQuery(t *testing.T) {
	bed := testbed.NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []string{
		"ip link add br0 type bridge",
		"ip link add va type veth peer name vb",
		"ip link set va master br0",
		"ip addr add 10.99.0.1/24 dev br0",
		"ip -6 addr add 2001:db8:99::1/64 dev br0 nodad",
		"ip link set vb mtu 1400",
		"ip link set br0 up", "ip link set va up", "ip link set vb up",
		"ip route add 10.50.0.0/24 via 10.99.0.254 dev br0 metric 7",
		"ip route add default via 10.99.0.254 dev br0",
	} {
		if out, err := bed.Exec(ctx, strings.Fields(c)...); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
	p := network.New(network.Options{NetNS: bed.NetNSPath()})
	defer p.Close()
	st, err := p.Query(ctx)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(map[string]any{"version": 1, "plugins": map[string]any{"network": st}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := Generate(Input{Doc: doc, Source: "the live host", System: "x86_64-linux"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteDir(dir, files, false); err != nil {
		t.Fatal(err)
	}
	for _, n := range files.Names() {
		if strings.HasSuffix(n, ".nix") {
			nixParse(t, filepath.Join(dir, n))
		}
	}
	nw := nixModule(t, filepath.Join(dir, "network.nix"))["networking"]

	// The oracle: iproute2's view of the bed.
	var ports []struct{ Ifname string }
	ipJSON(t, bed, &ports, "link", "show", "master", "br0")
	var wantPorts []string
	for _, p := range ports {
		wantPorts = append(wantPorts, p.Ifname)
	}
	sort.Strings(wantPorts)
	if got := jsonOf(at(nw, "bridges", "br0", "interfaces")); got != jsonOf(wantPorts) || len(wantPorts) != 1 {
		t.Errorf("networking.bridges.br0.interfaces = %s, ip says %v", got, wantPorts)
	}
	var addrs []struct {
		AddrInfo []struct {
			Family    string
			Local     string
			Prefixlen int
			Scope     string
		} `json:"addr_info"`
	}
	ipJSON(t, bed, &addrs, "addr", "show", "dev", "br0")
	want := map[string][]any{}
	for _, a := range addrs[0].AddrInfo {
		if a.Scope == "link" {
			continue
		}
		fam := map[string]string{"inet": "ipv4", "inet6": "ipv6"}[a.Family]
		want[fam] = append(want[fam], map[string]any{"address": a.Local, "prefixLength": a.Prefixlen})
	}
	if len(want["ipv4"]) != 1 || len(want["ipv6"]) != 1 {
		t.Fatalf("ip shows br0 with %v", want)
	}
	for _, fam := range []string{"ipv4", "ipv6"} {
		if got := jsonOf(at(nw, "interfaces", "br0", fam, "addresses")); got != jsonOf(want[fam]) {
			t.Errorf("networking.interfaces.br0.%s.addresses = %s, ip says %s", fam, got, jsonOf(want[fam]))
		}
	}
	var routes []struct {
		Dst     string
		Gateway string
		Dev     string
		Metric  int
	}
	ipJSON(t, bed, &routes, "route", "show", "10.50.0.0/24")
	if len(routes) != 1 {
		t.Fatalf("ip route shows %v", routes)
	}
	r := routes[0]
	wantRoute := []any{map[string]any{"address": "10.50.0.0", "prefixLength": 24, "via": r.Gateway, "options": map[string]any{"metric": "7"}}}
	if got := jsonOf(at(nw, "interfaces", r.Dev, "ipv4", "routes")); got != jsonOf(wantRoute) {
		t.Errorf("networking.interfaces.%s.ipv4.routes = %s, want %s", r.Dev, got, jsonOf(wantRoute))
	}
	ipJSON(t, bed, &routes, "route", "show", "default")
	if len(routes) != 1 {
		t.Fatalf("ip route shows %v", routes)
	}
	if got, w := jsonOf(at(nw, "defaultGateway")), jsonOf(map[string]any{"address": routes[0].Gateway, "interface": routes[0].Dev}); got != w {
		t.Errorf("networking.defaultGateway = %s, want %s", got, w)
	}
	// Kernel-made MACs and default MTUs are not pinned; a changed MTU is.
	for _, n := range []string{"br0", "va", "vb", "lo"} {
		if at(nw, "interfaces", n, "macAddress") != nil {
			t.Errorf("networking.interfaces.%s.macAddress pinned from a query", n)
		}
	}
	if at(nw, "interfaces", "lo") != nil || at(nw, "interfaces", "br0", "mtu") != nil {
		t.Errorf("loopback or default MTU written: %s", jsonOf(at(nw, "interfaces")))
	}
	if got := jsonOf(at(nw, "interfaces", "vb", "mtu")); got != "1400" {
		t.Errorf("networking.interfaces.vb.mtu = %s, want 1400", got)
	}
	text := string(files["network.nix"])
	if !strings.Contains(text, "#   va <-> vb") {
		t.Errorf("network.nix does not list the veth pair:\n%s", text)
	}
	if !strings.Contains(string(files["REPORT.md"]), "network.interfaces br0 (bridge, ports: va)") {
		t.Errorf("REPORT.md:\n%s", files["REPORT.md"])
	}
}

func ipJSON(t *testing.T, bed *testbed.NetNS, out any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := bed.Exec(ctx, append([]string{"ip", "-j"}, args...)...)
	if err != nil {
		t.Fatalf("ip -j %v: %v\n%s", args, err, s)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		t.Fatalf("ip -j %v: %v\n%s", args, err, s)
	}
}

// FuzzNetworkGenerate: any state document, however odd, either fails to
// decode with an error or generates; it never panics, stays deterministic,
// and every line pasted into NixOS's vswitch script is one line.
func FuzzNetworkGenerate(f *testing.F) {
	for name := range networkGoldens {
		b, err := os.ReadFile(filepath.Join("testdata", "golden", name, "input.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, name == "network-live")
	}
	f.Add([]byte(`{"plugins":{"network":{"interfaces":[null,{"name":"a"},{"name":"b","controller":"a","type":"bridge"}],"routes":{"config":[null,{"destination":"x"}]}}}}`), false)
	f.Add([]byte(`{"plugins":{"ovs":{"bridges":{"b":{"ports":{"p":null,"q":{"tag":"x","interfaces":{"q":null}}}}}}}}`), true)
	f.Fuzz(func(t *testing.T, doc []byte, live bool) {
		src := "fuzz.json"
		if live {
			src = "the live host"
		}
		in := Input{Doc: doc, Source: src}
		a, err := Generate(in)
		if err != nil {
			return
		}
		b, _ := Generate(in)
		for n := range a {
			if !bytes.Equal(a[n], b[n]) {
				t.Fatalf("%s not deterministic", n)
			}
		}
	})
}

// FuzzQuoting: shWord's output, read back by POSIX shell rules, is the
// input; ovsAtom's output is the input as ovs-vsctl reads it (bare, or a
// JSON string).
func FuzzQuoting(f *testing.F) {
	for _, s := range []string{"", "plain", "a b", "it's", `"q"`, "$(x)", "${x}", "`x`", "a\nb", "\x00", "é", "'''", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w := shWord(s)
		if got, ok := shUnquote(w); !ok || got != s {
			t.Fatalf("shWord(%q) = %s reads back as %q (ok %v)", s, w, got, ok)
		}
		a := ovsAtom(s)
		if ovsBare.MatchString(a) {
			if a != s {
				t.Fatalf("ovsAtom(%q) = %s", s, a)
			}
			return
		}
		var back string
		if err := json.Unmarshal([]byte(a), &back); err != nil || (back != s && utf8Valid(s)) {
			t.Fatalf("ovsAtom(%q) = %s reads back as %q: %v", s, a, back, err)
		}
		if strings.ContainsAny(a, "\n\r") {
			t.Fatalf("ovsAtom(%q) = %s holds a line break", s, a)
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// shUnquote reads one shell word made of bare characters and '...' parts.
func shUnquote(w string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(w); {
		switch c := w[i]; {
		case c == '\'':
			j := strings.IndexByte(w[i+1:], '\'')
			if j < 0 {
				return "", false
			}
			b.WriteString(w[i+1 : i+1+j])
			i += j + 2
		case c == '\\' && i+1 < len(w):
			b.WriteByte(w[i+1])
			i += 2
		case shBare.MatchString(string(c)):
			b.WriteByte(c)
			i++
		default:
			return "", false
		}
	}
	return b.String(), true
}
