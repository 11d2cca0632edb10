package netcheck

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

type listSource struct {
	name string
	obs  []Observation
	err  error
}

func (l listSource) Name() string { return l.name }
func (l listSource) Observe(context.Context) ([]Observation, error) {
	return l.obs, l.err
}

func obs(src, ifname string, mtu int, master string, addrs ...string) Observation {
	return Observation{Source: src, Interface: ifname, Exists: true, State: "up", MTU: mtu,
		Master: master, KnownMaster: true, Addresses: addrs, KnownAddresses: src != "sysfs"}
}

// The comparison rules: complete sources disagree on existence by lacking
// an interface, partial ones only by naming it; unknown fields are never
// compared; an OVS bridge as master agrees with no kernel master.
func TestCompareRules(t *testing.T) {
	in := []Input{
		{Source: listSource{name: "netlink", obs: []Observation{
			obs("netlink", "br0", 1500, "", "10.0.0.1/24"),
			obs("netlink", "p1", 1500, ""),
			obs("netlink", "v1", 1400, "brx"),
		}}, Complete: true},
		{Source: listSource{name: "sysfs", obs: []Observation{
			obs("sysfs", "br0", 1500, ""),
			obs("sysfs", "p1", 1500, ""),
			obs("sysfs", "v1", 1400, "brx"),
		}}, Complete: true},
		{Source: listSource{name: "ovsdb", obs: []Observation{
			{Source: "ovsdb", Interface: "p1", Exists: true, MTU: 1500, Master: "br0", KnownMaster: true},
			{Source: "ovsdb", Interface: "v1", Exists: true, MTU: 1500, Master: "br0", KnownMaster: true},
			{Source: "ovsdb", Interface: "gone", Exists: true, Master: "br0", KnownMaster: true},
		}}},
		{Source: listSource{name: "networkmanager", err: errors.New("boom")}, Complete: true},
		{Source: listSource{name: "other"}, Unavailable: errors.New("not running")},
	}
	rep, err := Check(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range rep.Disagreements {
		b, _ := json.Marshal(d.Values)
		got[d.Interface+"."+d.Field] = string(b)
	}
	want := map[string]string{
		"gone.exists": `{"netlink":"missing","ovsdb":"present","sysfs":"missing"}`,
		"v1.mtu":      `{"netlink":"1400","ovsdb":"1500","sysfs":"1400"}`,
		"v1.master":   `{"netlink":"brx","ovsdb":"br0","sysfs":"brx"}`,
	}
	if len(got) != len(want) {
		t.Errorf("disagreements %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %s, want %s", k, got[k], v)
		}
	}
	if !rep.Sources[0].Available || rep.Sources[3].Available || rep.Sources[3].Error != "boom" || rep.Sources[4].Error != "not running" {
		t.Errorf("sources %+v", rep.Sources)
	}
	if strings.Join(rep.Interfaces, " ") != "br0 gone p1 v1" {
		t.Errorf("interfaces %v", rep.Interfaces)
	}
	// No source at all: an error, not an empty "all agree".
	if _, err := Check(context.Background(), []Input{{Source: listSource{name: "x", err: errors.New("down")}}}); err == nil {
		t.Error("Check with no usable source succeeded")
	}
}

// Sysfs against a real namespace, with `ip -j link` as the oracle: the
// bed's sysfs is reached through its init's root (/proc/PID/root/sys).
func TestSysfsMatchesIPLink(t *testing.T) {
	bed := testbed.NewNetNS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range [][]string{
		{"ip", "link", "add", "ckbr0", "type", "bridge"},
		{"ip", "link", "add", "ckv0", "mtu", "1400", "type", "veth", "peer", "name", "ckv1"},
		{"ip", "link", "set", "ckv0", "master", "ckbr0"},
		{"ip", "link", "set", "ckbr0", "up"},
	} {
		if _, err := bed.Exec(ctx, c...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Sysfs{Root: "/proc/" + strconv.Itoa(bed.PID()) + "/root/sys"}.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := bed.Exec(ctx, "ip", "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Name   string   `json:"ifname"`
		MTU    int      `json:"mtu"`
		Master string   `json:"master"`
		Flags  []string `json:"flags"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(links) {
		t.Fatalf("sysfs saw %d interfaces, ip link %d:\n%+v\n%s", len(got), len(links), got, out)
	}
	bySys := map[string]Observation{}
	for _, o := range got {
		bySys[o.Interface] = o
	}
	for _, l := range links {
		o, ok := bySys[l.Name]
		if !ok {
			t.Errorf("sysfs lacks %s", l.Name)
			continue
		}
		state := "down"
		for _, f := range l.Flags {
			if f == "UP" {
				state = "up"
			}
		}
		if o.MTU != l.MTU || o.Master != l.Master || o.State != state {
			t.Errorf("%s: sysfs mtu=%d master=%q state=%s; ip mtu=%d master=%q state=%s", l.Name, o.MTU, o.Master, o.State, l.MTU, l.Master, state)
		}
	}
	if bySys["ckv0"].Master != "ckbr0" || bySys["ckv0"].MTU != 1400 || bySys["ckv1"].MTU != 1500 || bySys["ckbr0"].State != "up" {
		t.Errorf("unexpected sysfs view %+v", bySys)
	}
}
