package ovs

import (
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// FuzzState: any ovs part of a document either fails decoding/validation
// with problems, or plans (against nothing and against a queried host)
// without panicking, into op data that Apply's decoder accepts and turns
// into OVSDB operations; Subset of the touched items plans too.
func FuzzState(f *testing.F) {
	for _, s := range []string{
		fullDocSeed,
		`{"bridges": {"br0": {"ports": {"p1": {"tag": null, "trunks": []}}}}}`,
		`{"bridges": {"br0": {"state": "absent"}, "br1": {"ports": {"p1": {"state": "absent"}}}}}`,
		`{"bridges": {"br0": {"ports": {"p1": {"interfaces": {"p1": {"mtu_request": 1500, "options": {}}}}}}}}`,
		`{"bridges": {"br0": {"ports": {"p1": {"tag": 1e3}}}}}`,
		`{"bridges": {"br0": null}}`,
	} {
		f.Add([]byte(s))
	}
	p := New(plugin.Options{})
	types := state.Types{"ovs": p.NewState}
	validate := func(_ string, st any) state.Problems { return p.Validate(st) }
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := state.Decode([]byte(`{"version": 1, "plugins": {"ovs": `+string(data)+`}}`), state.FormatJSON, types, validate)
		if err != nil {
			return
		}
		des := doc.Plugins["ovs"]
		for _, cur := range []*State{{}, queried()} {
			ops, err := p.Plan(cur, des)
			if err != nil {
				continue
			}
			for _, op := range ops {
				tx, err := decodeTx(op.Data)
				if err != nil {
					t.Fatalf("plan made op data its own decoder rejects: %v\n%s", err, op.Data)
				}
				if _, err := build(snapshotOf(cur), tx.Actions); err != nil && !strings.Contains(err.Error(), "Open_vSwitch row") {
					t.Fatalf("build: %v\n%s", err, op.Data)
				}
				sub := p.Subset(cur, []string{op.Item})
				if _, err := p.Plan(cur, sub); err != nil {
					t.Fatalf("plan of subset: %v", err)
				}
			}
		}
	})
}

// FuzzOpData: Apply's decoder of op data (which comes back from saved
// plans and journals) rejects or accepts without panicking, and what it
// accepts builds.
func FuzzOpData(f *testing.F) {
	for _, s := range []string{
		`{"actions": [{"kind": "add-bridge", "bridge": "br0", "bridge_fields": {"ports": {"p": {"interfaces": {"p": {}}}}}}]}`,
		`{"actions": [{"kind": "set-port", "bridge": "br0", "port": "p1", "port_fields": {"tag": "x"}}]}`,
		`{"actions": [{"kind": "del-interface", "bridge": "br0", "port": "p1", "interface": "p1"}]}`,
		`{"actions": [{"kind": "set-interface", "bridge": "br0", "port": "p1", "interface": "p1", "interface_fields": {"mtu_request": null}}]}`,
		`{"actions": [{"kind": "nope", "bridge": "b"}]}`,
		`{"actions": null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tx, err := decodeTx(data)
		if err != nil {
			return
		}
		build(snapshotOf(queried()), tx.Actions)
		build(&snapshot{bridges: map[string]*bridgeRow{}, ports: map[string]*portRow{}, ifaces: map[string]*ifaceRow{}}, tx.Actions)
	})
}

const fullDocSeed = `{"bridges": {"br0": {"datapath_type": "netdev", "fail_mode": "secure", "external_ids": {"owner": "x"},
 "ports": {"p1": {"tag": 10}, "pa": {"interfaces": {"pa": {"type": "patch", "options": {"peer": "pb"}}}}}},
 "br1": {"ports": {"pb": {"interfaces": {"pb": {"type": "patch", "options": {"peer": "pa"}}}}}}}}`

// snapshotOf makes a database picture of a state, with made-up UUIDs.
func snapshotOf(s *State) *snapshot {
	snap := &snapshot{root: &rootRow{UUID: "00000000-0000-0000-0000-000000000001"}, bridges: map[string]*bridgeRow{}, ports: map[string]*portRow{}, ifaces: map[string]*ifaceRow{}}
	n := 100
	id := func() string { n++; return "00000000-0000-0000-0000-" + strings.Repeat("0", 9) + itoa3(n) }
	for bn, b := range s.Bridges {
		br := &bridgeRow{UUID: id(), Name: bn}
		if b != nil {
			for pn, pt := range b.Ports {
				pr := &portRow{UUID: id(), Name: pn}
				if pt != nil {
					for in := range pt.Interfaces {
						ir := &ifaceRow{UUID: id(), Name: in}
						snap.ifaces[ir.UUID] = ir
						pr.Interfaces = append(pr.Interfaces, ir.UUID)
					}
				}
				snap.ports[pr.UUID] = pr
				br.Ports = append(br.Ports, pr.UUID)
			}
		}
		snap.bridges[bn] = br
		snap.root.Bridges = append(snap.root.Bridges, br.UUID)
	}
	return snap
}

func itoa3(n int) string {
	return string([]byte{byte('0' + n/100%10), byte('0' + n/10%10), byte('0' + n%10)})
}
