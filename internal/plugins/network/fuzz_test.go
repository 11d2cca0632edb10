package network

import (
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// fuzzCurrent is a host the fuzzed documents are planned against.
const fuzzCurrent = `{"interfaces":[
	{"name":"lo","type":"loopback","state":"up","mtu":65536,"controller":"","ipv4":{"address":[{"ip":"127.0.0.1","prefix_length":8}]},"ipv6":{"address":[{"ip":"::1","prefix_length":128}]}},
	{"name":"br0","type":"bridge","state":"up","mtu":1500,"controller":"","ipv4":{"address":[{"ip":"10.0.0.1","prefix_length":24}]},"ipv6":{"address":[]}},
	{"name":"va","type":"veth","state":"up","mtu":1500,"controller":"br0","veth":{"peer":"vb"},"ipv4":{"address":[]},"ipv6":{"address":[]}},
	{"name":"vb","type":"veth","state":"down","mtu":1500,"controller":"","veth":{"peer":"va"},"ipv4":{"address":[]},"ipv6":{"address":[]}}],
	"routes":{"config":[{"destination":"10.5.0.0/24","next_hop_address":"10.0.0.254","next_hop_interface":"br0","table_id":254,"metric":100}]}}`

// FuzzValidatePlan feeds arbitrary network documents through decoding,
// Validate, Plan and Subset: nothing may panic, a valid document plans
// ops with unique IDs, and the rollback subset of those ops plans too.
func FuzzValidatePlan(f *testing.F) {
	for _, s := range []string{
		fuzzCurrent,
		`{"interfaces":[{"name":"br1","type":"bridge","bridge":{"port":[{"name":"vb"}]},"ipv4":{"address":[{"ip":"10.1.0.1","prefix_length":24}]}}]}`,
		`{"interfaces":[{"name":"x","type":"veth","veth":{"peer":"y"},"controller":"br0"},{"name":"y","state":"down"}],"routes":{"config":[{"destination":"::/0","next_hop_address":"2001:db8::1","metric":0}]}}`,
		`{"interfaces":[{"name":"br0","state":"absent"}],"routes":{"config":[{"destination":"10.5.0.0/24","state":"absent"}]},"probes":[{"ping":"10.0.0.2","timeout":"1s"}]}`,
		`{"interfaces":[{"name":"vx","type":"vxlan","vxlan":{"id":5,"base_iface":"br0"}}]}`,
	} {
		f.Add([]byte(s))
	}
	cur := &State{}
	if err := json.Unmarshal([]byte(fuzzCurrent), cur); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		des := &State{}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if dec.Decode(des) != nil {
			return
		}
		if len(validate(des)) > 0 {
			return
		}
		ops, err := plan(cur, des)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		var items []string
		for _, op := range ops {
			if seen[op.ID] {
				t.Fatalf("duplicate op id %s", op.ID)
			}
			seen[op.ID] = true
			items = append(items, op.Item)
			var d opData
			if err := json.Unmarshal(op.Data, &d); err != nil {
				t.Fatalf("op data: %v", err)
			}
		}
		if _, err := plan(cur, subset(cur, items)); err != nil {
			t.Fatalf("rollback of %v does not plan: %v", items, err)
		}
	})
}

// FuzzParseEchoReply: ICMP from the network must never crash the probe.
func FuzzParseEchoReply(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		var typ icmp.Type = ipv4.ICMPTypeEchoReply
		if v6 {
			typ = ipv6.ICMPTypeEchoReply
		}
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 7, Seq: 3, Data: []byte("op-dbus probe")}}
		b, _ := m.Marshal(nil)
		f.Add(b, v6)
	}
	f.Add([]byte{0, 0}, false)
	f.Add([]byte{3, 1, 0, 0, 0, 0, 0, 0}, false)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		id, seq, ok := parseEchoReply(b, v6)
		if ok && (id < 0 || id > 0xffff || seq < 0 || seq > 0xffff) {
			t.Fatalf("id %d seq %d", id, seq)
		}
	})
}

func TestParseEchoReply(t *testing.T) {
	m := icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: 7, Seq: 3}}
	b, _ := m.Marshal(nil)
	if id, seq, ok := parseEchoReply(b, false); !ok || id != 7 || seq != 3 {
		t.Fatalf("%d %d %v", id, seq, ok)
	}
	m.Type = ipv4.ICMPTypeEcho // our own request, seen on a raw socket
	b, _ = m.Marshal(nil)
	if _, _, ok := parseEchoReply(b, false); ok {
		t.Fatal("an echo request parsed as a reply")
	}
}
