package network

import (
	"context"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// populate builds a bridge with a veth port, a vxlan, addresses of both
// families and routes in two tables with iproute2.
func populate(t testing.TB, bed *testbed.NetNS) {
	sh(t, bed,
		"ip link add br0 type bridge",
		"ip link add va type veth peer name vb",
		"ip link set va master br0",
		"ip link set br0 up",
		"ip link set va up",
		"ip link set vb mtu 1400",
		"ip addr add 10.0.0.1/24 dev br0",
		"ip addr add 10.0.1.1/24 dev br0",
		"ip addr add 2001:db8::1/64 dev br0",
		"ip addr add 10.3.0.1/16 dev vb",
		"ip route add 10.5.0.0/24 via 10.0.0.254 metric 100",
		"ip route add 10.6.0.0/24 dev br0 table 100",
		"ip route add blackhole 10.7.0.0/24",
		"ip route add 2001:db8:5::/48 via 2001:db8::fe dev br0 metric 300",
		"ip link add vx0 type vxlan id 42 dstport 4789 remote 192.0.2.1 dev br0",
	)
}

func TestTestbedQueryMatchesIPOracle(t *testing.T) {
	bed, p := bedPlugin(t)
	populate(t, bed)
	st := query(t, p)
	sameView(t, "query vs ip -j", viewOf(st), oracle(t, bed))
	// Details the view does not cover.
	var vx *Interface
	for _, i := range st.Interfaces {
		if i.Name == "vx0" {
			vx = i
		}
	}
	if vx == nil || vx.VXLAN == nil || *vx.VXLAN != (VXLAN{ID: 42, Remote: "192.0.2.1", DestinationPort: 4789, BaseIface: "br0"}) {
		t.Fatalf("vxlan: %+v", vx)
	}
	if len(st.Interfaces) != 5 || st.Interfaces[0].Name != "lo" {
		t.Fatalf("want lo, br0, va, vb, vx0 (loopback included, first): %v", viewOf(st))
	}
	// The query is a valid document that plans nothing.
	if pl := planDoc(t, p, queryDoc(t, p)); !pl.Empty() {
		t.Fatalf("query → plan is not empty: %v", opIDs(pl))
	}
}

func TestTestbedCreateApplyVerify(t *testing.T) {
	bed, p := bedPlugin(t)
	doc := `{"interfaces":[
		{"name":"br0","type":"bridge","mtu":1450,"ipv4":{"address":[{"ip":"10.10.0.1","prefix_length":24}]},"ipv6":{"address":[{"ip":"2001:db8:10::1","prefix_length":64}]}},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br0","mtu":1450},
		{"name":"vb","type":"veth","veth":{"peer":"va"},"state":"down","mac_address":"02:00:00:00:00:0b","ipv4":{"address":[{"ip":"10.11.0.1","prefix_length":24}]}},
		{"name":"vx1","type":"vxlan","vxlan":{"id":100,"remote":"192.0.2.7","destination_port":4789,"base_iface":"br0"}}],
		"routes":{"config":[
			{"destination":"10.20.0.0/16","next_hop_address":"10.10.0.254","metric":50},
			{"destination":"10.21.0.0/24","next_hop_interface":"br0","table_id":100,"metric":10},
			{"destination":"0.0.0.0/0","next_hop_address":"10.10.0.254","table_id":200},
			{"destination":"2001:db8:20::/48","next_hop_address":"2001:db8:10::fe","next_hop_interface":"br0"},
			{"destination":"10.22.0.0/24","route_type":"unreachable"}]}}`
	pl, res := apply(t, p, doc)
	if !res.Success {
		t.Fatalf("apply failed: %v\n%+v", res.Err, res)
	}
	want := []string{"network/create/br0", "network/create/va", "network/create/vx1"}
	for _, w := range want {
		if !slices.Contains(opIDs(pl), w) {
			t.Errorf("plan lacks %s: %v", w, opIDs(pl))
		}
	}
	v := oracle(t, bed)
	check := func(name string, want linkView) {
		t.Helper()
		got, ok := v.Links[name]
		if !ok {
			t.Errorf("%s does not exist after apply (ip -j)", name)
			return
		}
		if want.MAC == "" {
			got.MAC = ""
		}
		if want.Kind == TypeVXLAN {
			got.MTU = 0 // the kernel derives it from the base link
		}
		if len(got.Addrs) == 0 {
			got.Addrs = nil
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ip -j says %+v, want %+v", name, got, want)
		}
	}
	check("br0", linkView{Kind: "bridge", Up: true, MTU: 1450, Addrs: []string{"10.10.0.1/24", "2001:db8:10::1/64"}})
	check("va", linkView{Kind: "veth", Up: true, MTU: 1450, Master: "br0", Peer: "vb"})
	check("vb", linkView{Kind: "veth", Up: false, MTU: 1500, MAC: "02:00:00:00:00:0b", Peer: "va", Addrs: []string{"10.11.0.1/24"}})
	check("vx1", linkView{Kind: "vxlan", Up: true})
	for _, r := range []string{
		"unicast 10.20.0.0/16 via=10.10.0.254 dev=br0 table=254 metric=50",
		"unicast 10.21.0.0/24 via= dev=br0 table=100 metric=10",
		"unicast 0.0.0.0/0 via=10.10.0.254 dev=br0 table=200 metric=0",
		"unicast 2001:db8:20::/48 via=2001:db8:10::fe dev=br0 table=254 metric=1024",
		"unreachable 10.22.0.0/24 via= dev= table=254 metric=0",
	} {
		if !slices.Contains(v.Routes, r) {
			t.Errorf("ip -j route lacks %q:\n%s", r, strings.Join(v.Routes, "\n"))
		}
	}
	// The same document again plans nothing; so does the full query.
	d, _ := decodeDoc(t, p, doc)
	if pl := planDoc(t, p, d); !pl.Empty() {
		t.Fatalf("second plan: %v", opIDs(pl))
	}
	if pl := planDoc(t, p, queryDoc(t, p)); !pl.Empty() {
		t.Fatalf("query → plan: %v", opIDs(pl))
	}
}

func slicesEqualNil(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b))
}

// An out-of-band change is undone by applying what query captured.
func TestTestbedDriftRestoredByCapturedQuery(t *testing.T) {
	bed, p := bedPlugin(t)
	populate(t, bed)
	before := oracle(t, bed)
	captured := queryDoc(t, p)
	sh(t, bed,
		"ip link set br0 mtu 1400",
		"ip addr del 10.0.1.1/24 dev br0",
		"ip addr add 10.0.9.1/24 dev br0",
		"ip link set va nomaster",
		"ip link set vb up",
		"ip route del 10.6.0.0/24 table 100",
		"ip route replace 10.5.0.0/24 via 10.0.0.253 metric 100",
		"ip link set vb address 02:00:00:00:00:99",
	)
	pl := planDoc(t, p, captured)
	if pl.Empty() {
		t.Fatal("captured state plans nothing after drift")
	}
	res := newEngine(p).Apply(tctx(t), captured, pl)
	if !res.Success {
		t.Fatalf("restore failed: %v", res.Err)
	}
	sameView(t, "after restore vs before drift", oracle(t, bed), before)
}

// state: absent removes what it names and nothing else.
func TestTestbedAbsentDeletesOnlyNamed(t *testing.T) {
	bed, p := bedPlugin(t)
	populate(t, bed)
	sh(t, bed, "ip link add br1 type bridge", "ip route add 10.8.0.0/24 dev br0 metric 5", "ip route add 10.8.0.0/24 dev br0 metric 6")
	before := oracle(t, bed)
	_, res := apply(t, p, `{"interfaces":[{"name":"br1","state":"absent"},{"name":"gone0","state":"absent"}],
		"routes":{"config":[{"destination":"10.8.0.0/24","metric":5,"state":"absent"},{"destination":"10.99.0.0/24","state":"absent"}]}}`)
	if !res.Success {
		t.Fatalf("%v", res.Err)
	}
	after := oracle(t, bed)
	delete(before.Links, "br1")
	before.Routes = slices.DeleteFunc(before.Routes, func(r string) bool { return strings.Contains(r, "10.8.0.0/24") && strings.Contains(r, "metric=5") })
	sameView(t, "after absent", after, before)
	// A veth named absent takes its peer along.
	_, res = apply(t, p, `{"interfaces":[{"name":"va","state":"absent"},{"name":"vb","state":"absent"}]}`)
	if !res.Success {
		t.Fatalf("%v", res.Err)
	}
	after = oracle(t, bed)
	if _, ok := after.Links["va"]; ok {
		t.Fatal("va still there")
	}
	if _, ok := after.Links["br0"]; !ok {
		t.Fatal("br0 removed though not named")
	}
}

// A transaction that created links, addresses and routes and then fails
// verification (a probe gets no answer) is rolled back: what it created is
// deleted, what it changed is restored.
func TestTestbedRollbackRemovesCreated(t *testing.T) {
	bed, p := bedPlugin(t)
	sh(t, bed, "ip link add br0 type bridge", "ip link set br0 up", "ip addr add 10.99.0.1/24 dev br0")
	before := oracle(t, bed)
	_, res := apply(t, p, `{"interfaces":[
		{"name":"br0","mtu":1400,"ipv4":{"address":[{"ip":"10.98.0.1","prefix_length":24}]}},
		{"name":"br9","type":"bridge","ipv4":{"address":[{"ip":"10.97.0.1","prefix_length":24}]}},
		{"name":"va","type":"veth","veth":{"peer":"vb"},"controller":"br9"}],
		"routes":{"config":[{"destination":"10.50.0.0/24","next_hop_address":"10.97.0.254","metric":3}]},
		"probes":[{"ping":"192.0.2.99","timeout":"300ms"}]}`)
	if res.Success {
		t.Fatal("apply with an unanswered probe succeeded")
	}
	if !strings.Contains(res.Err.Error(), "probes[0].ping") || !strings.Contains(res.Err.Error(), "no echo reply from 192.0.2.99") {
		t.Errorf("error does not name the probe: %v", res.Err)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback not verified: %+v", res.Rollback)
	}
	sameView(t, "after rollback vs before", oracle(t, bed), before)

	// A failing op midway: the route's gateway is unreachable, so the
	// route op fails after the links and addresses were made.
	_, res = apply(t, p, `{"interfaces":[{"name":"br8","type":"bridge","ipv4":{"address":[{"ip":"10.96.0.1","prefix_length":24}]}}],
		"routes":{"config":[{"destination":"10.51.0.0/24","next_hop_address":"203.0.113.1"}]}}`)
	if res.Success || !strings.Contains(res.Err.Error(), "add route 10.51.0.0/24") {
		t.Fatalf("want a failed route op: %v", res.Err)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback not verified: %+v", res.Rollback)
	}
	sameView(t, "after failed op rollback vs before", oracle(t, bed), before)
}

// This kernel lacks some link kinds. Detect it with iproute2 first; the
// plugin must then fail clearly, and create the link when the kind exists.
func TestTestbedMissingKernelKind(t *testing.T) {
	bed, p := bedPlugin(t)
	out, err := bed.Exec(tctx(t), "ip", "link", "add", "probe0", "type", "dummy")
	hasDummy := err == nil
	if hasDummy {
		sh(t, bed, "ip link del probe0")
		t.Log("this kernel has the dummy link kind: checking that apply creates one")
	} else {
		t.Logf("this kernel has no dummy link kind (ip: %s): checking that apply says so", strings.TrimSpace(out))
	}
	before := oracle(t, bed)
	_, res := apply(t, p, `{"interfaces":[{"name":"d0","type":"dummy","ipv4":{"address":[{"ip":"10.1.0.1","prefix_length":24}]}}]}`)
	if hasDummy {
		if !res.Success {
			t.Fatalf("dummy: %v", res.Err)
		}
		if oracle(t, bed).Links["d0"].Kind != "dummy" {
			t.Fatal("d0 not created")
		}
		return
	}
	if res.Success || !strings.Contains(res.Err.Error(), "kernel has no dummy link type") {
		t.Fatalf("want 'kernel has no dummy link type', got %v", res.Err)
	}
	sameView(t, "after failed dummy", oracle(t, bed), before)
}

func TestTestbedObserve(t *testing.T) {
	bed, p := bedPlugin(t)
	populate(t, bed)
	obs, err := p.Source().Observe(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if p.Source().Name() != "netlink" {
		t.Fatal(p.Source().Name())
	}
	v := oracle(t, bed)
	if len(obs) != len(v.Links) {
		t.Fatalf("%d observations, %d links", len(obs), len(v.Links))
	}
	for _, o := range obs {
		l, ok := v.Links[o.Interface]
		if !ok || !o.Exists || o.MTU != l.MTU || o.Master != l.Master || (o.State == "up") != l.Up || !o.KnownAddresses || !o.KnownMaster {
			t.Errorf("%+v vs ip -j %+v", o, l)
		}
		if !slicesEqualNil(o.Addresses, l.Addrs) {
			t.Errorf("%s addresses %v vs ip -j %v", o.Interface, o.Addresses, l.Addrs)
		}
	}
}

// peerBed makes a second namespace and a veth pair between the two beds:
// va stays in bed (port of br0, 10.99.0.1/24 on br0), vb moves to the peer
// with 10.99.0.2/24.
func peerBed(t *testing.T, bed *testbed.NetNS) *testbed.NetNS {
	peer := testbed.NewNetNS(t)
	sh(t, bed,
		"ip link add br0 type bridge",
		"ip link add va type veth peer name vb",
		"ip link set va master br0",
		"ip addr add 10.99.0.1/24 dev br0",
		"ip link set br0 up",
		"ip link set va up",
	)
	if err := testbed.MoveLink(bed, "vb", peer); err != nil {
		t.Fatal(err)
	}
	sh(t, peer, "ip addr add 10.99.0.2/24 dev vb", "ip link set vb up")
	return peer
}

func busyboxPing(t *testing.T, bed *testbed.NetNS, target string) bool {
	t.Helper()
	testbed.Program(t, "busybox", "busybox") // its ping is the reachability oracle
	_, err := bed.Exec(tctx(t), "busybox", "ping", "-c", "1", "-W", "2", target)
	return err == nil
}

// THE SAFETY TEST, in process: re-addressing the bridge cuts the host off
// from its peer; the probe notices, the apply fails, and rollback puts the
// address back so the peer answers again.
func TestTestbedProbeFailureRollsBackAddress(t *testing.T) {
	bed, p := bedPlugin(t)
	peerBed(t, bed)
	if !busyboxPing(t, bed, "10.99.0.2") {
		t.Fatal("peer does not answer before the apply")
	}
	// The probe passes while the link is fine.
	ch, err := p.Probe(tctx(t), &State{Probes: []*Probe{{Ping: "10.99.0.2", Timeout: "2s"}, {Ping: "::1"}, {Ping: "127.0.0.1"}}})
	if err != nil || len(ch) != 0 {
		t.Fatalf("probe before: %v %v", ch, err)
	}
	before := oracle(t, bed)
	// The query sees vb, in the other namespace, as va's peer.
	if before.Links["va"].Peer != "" {
		t.Fatalf("oracle peer: %+v", before.Links["va"])
	}
	var va *Interface
	for _, i := range query(t, p).Interfaces {
		if i.Name == "va" {
			va = i
		}
	}
	if va == nil || va.Veth == nil || va.Veth.Peer != "vb" {
		t.Fatalf("query of va whose peer is in another namespace: %+v", va)
	}

	_, res := apply(t, p, `{"interfaces":[{"name":"br0","ipv4":{"address":[{"ip":"10.98.0.1","prefix_length":24}]}}],
		"probes":[{"ping":"10.99.0.2","timeout":"1s"}]}`)
	if res.Success {
		t.Fatal("apply that cuts off the peer succeeded")
	}
	if !strings.Contains(res.Err.Error(), "verification failed") || !strings.Contains(res.Err.Error(), "probes[0].ping") {
		t.Errorf("error does not name the failed probe: %v", res.Err)
	}
	found := false
	for _, m := range res.Verify.Mismatches {
		if m.Path == "probes[0].ping" && strings.Contains(m.String(), "no echo reply from 10.99.0.2") {
			found = true
		}
	}
	if !found {
		t.Errorf("verification mismatches lack the probe: %+v", res.Verify)
	}
	if res.Rollback == nil || !res.Rollback.Verify.OK {
		t.Fatalf("rollback: %+v", res.Rollback)
	}
	after := oracle(t, bed)
	if got := after.Links["br0"].Addrs; !slices.Equal(got, []string{"10.99.0.1/24"}) {
		t.Fatalf("br0 addresses after rollback (ip -j): %v", got)
	}
	sameView(t, "after rollback", after, before)
	if !busyboxPing(t, bed, "10.99.0.2") {
		t.Fatal("peer does not answer after rollback")
	}
}

// The plugin works in the namespace of the process by default.
func TestTestbedCurrentNamespaceDefault(t *testing.T) {
	bed := testbed.NewNetNS(t)
	sh(t, bed, "ip link add brx type bridge")
	ns, err := netns.GetFromPath(bed.NetNSPath())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	p := New(Options{})
	defer p.Close()
	var names []string
	err = withNetNS(ns, func() error {
		// The handle is opened here, on the switched thread.
		st, err := p.Query(context.Background())
		if err != nil {
			return err
		}
		for _, i := range st.(*State).Interfaces {
			names = append(names, i.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"lo", "brx"}) {
		t.Fatalf("links %v", names)
	}
}

func withNetNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		err = f()
		if e := netns.Set(orig); e != nil {
			errc <- e
			return // thread stays locked and dies
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}
