package networkmanager

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
)

// FuzzStatePlan feeds documents through strict decoding, Validate, Plan
// (against a fixed host) and Subset: none may panic, a valid document's
// plan must carry decodable op data, and the subset of the pre state must
// plan nothing against it.
func FuzzStatePlan(f *testing.F) {
	f.Add(`{"connections":{"br9":{"type":"bridge","interface_name":"br9","active":true,"ipv4":{"method":"manual","addresses":["10.99.0.1/24"]}}}}`)
	f.Add(`{"connections":{"idle":{"state":"absent"},"br9":{"active":false,"ipv6":{"dns":["fd00::1"]}}}}`)
	f.Add(`{"connections":{"p":{"type":"veth","veth":{"peer":"x"},"controller":"11111111-1111-4111-8111-111111111111","port_type":"bridge"}}}`)
	f.Add(`{"connections":{"br9":{"uuid":"11111111-1111-4111-8111-111111111111","id":"renamed","mtu":1400}}}`)
	f.Fuzz(func(t *testing.T, doc string) {
		var s State
		dec := json.NewDecoder(strings.NewReader(doc))
		dec.DisallowUnknownFields()
		if dec.Decode(&s) != nil {
			return
		}
		if len(validate(&s)) > 0 {
			return
		}
		ops, err := plan(current(), &s)
		if err != nil {
			return
		}
		for _, op := range ops {
			var d opData
			if err := json.Unmarshal(op.Data, &d); err != nil {
				t.Fatalf("op data: %v", err)
			}
			for _, st := range d.Steps {
				if st.Conn != nil && st.Action == actAdd {
					_ = newSettings(st.Key, st.UUID, st.Conn)
				}
			}
			sub := subset(current(), []string{op.Item})
			if again, err := plan(current(), sub); err != nil || len(again) != 0 {
				t.Fatalf("subset of pre plans %v %v", again, err)
			}
		}
	})
}

// FuzzFromSettings decodes settings of arbitrary shapes (as another process
// could send them): fromSettings and addressData must not panic.
func FuzzFromSettings(f *testing.F) {
	f.Add(`{"connection":{"id":"br9","uuid":"u","type":"bridge","autoconnect":false},"ipv4":{"method":"manual","dns":[16777226],"address-data":[{"address":"10.0.0.1","prefix":24}]}}`)
	f.Add(`{"connection":{"id":1,"uuid":["u"]},"ipv6":{"dns":[[1,2,3]],"address-data":[{"address":"fd00::1","prefix":129}]},"802-3-ethernet":{"mtu":-1}}`)
	f.Add(`{"bridge":{"stp":"yes"},"veth":{"peer":7}}`)
	f.Fuzz(func(t *testing.T, js string) {
		var raw map[string]map[string]any
		if json.Unmarshal([]byte(js), &raw) != nil {
			return
		}
		s := Settings{}
		for name, m := range raw {
			s[name] = map[string]dbus.Variant{}
			for k, v := range m {
				s[name][k] = dbus.MakeVariant(toDBus(v))
			}
		}
		c := fromSettings(s)
		if c == nil {
			t.Fatal("nil connection")
		}
		_ = addressData(toDBus(raw["ipv4"]["address-data"]))
		_ = connectionsFromSettings([]Settings{s, s})
	})
}

// toDBus turns a JSON value into the types godbus decodes D-Bus values
// into: numbers become uint32 when they fit (else int64), byte-sized
// number lists []byte, objects map[string]dbus.Variant.
func toDBus(v any) any {
	switch x := v.(type) {
	case float64:
		if x >= 0 && x <= 0xffffffff && x == float64(uint32(x)) {
			return uint32(x)
		}
		return int64(x)
	case []any:
		if len(x) == 0 {
			return []string{}
		}
		allNum := true
		for _, e := range x {
			if _, ok := e.(float64); !ok {
				allNum = false
			}
		}
		if allNum {
			out := make([]uint32, len(x))
			for i, e := range x {
				out[i] = uint32(e.(float64))
			}
			return out
		}
		var lists [][]byte
		var maps []map[string]dbus.Variant
		var strs []string
		for _, e := range x {
			switch ev := e.(type) {
			case []any:
				b := make([]byte, 0, len(ev))
				for _, n := range ev {
					if f, ok := n.(float64); ok {
						b = append(b, byte(f))
					}
				}
				lists = append(lists, b)
			case map[string]any:
				m := map[string]dbus.Variant{}
				for k, vv := range ev {
					m[k] = dbus.MakeVariant(toDBus(vv))
				}
				maps = append(maps, m)
			case string:
				strs = append(strs, ev)
			}
		}
		switch {
		case maps != nil:
			return maps
		case lists != nil:
			return lists
		default:
			return strs
		}
	case map[string]any:
		m := map[string]dbus.Variant{}
		for k, vv := range x {
			m[k] = dbus.MakeVariant(toDBus(vv))
		}
		return m
	case nil:
		return ""
	}
	return v
}
