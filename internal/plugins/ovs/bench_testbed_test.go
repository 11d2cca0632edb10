package ovs

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

// The benchmarks run against ovsdb-server alone (testbed.OVSDBOnly), so
// ovs-vsctl runs with --no-wait, as it must without ovs-vswitchd; op-dbus
// does not wait either (it waits only when ovs-vswitchd serves the
// database). ovs-vsctl runs on the host against the socket file, without
// nsenter, so its numbers carry no bed overhead.

func benchVsctl(b *testing.B, o *testbed.OVS, args ...string) {
	b.Helper()
	argv := append([]string{"--db=" + o.DBAddress, "--no-wait", "--timeout=20"}, args...)
	if out, err := exec.Command("ovs-vsctl", argv...).CombinedOutput(); err != nil {
		b.Fatalf("ovs-vsctl %v: %v\n%s", args, err, out)
	}
}

// benchHost: 10 bridges with 10 ports each (110 Interface rows).
func benchHost(b *testing.B) (*testbed.OVS, *Plugin) {
	o := testbed.NewOVS(b, testbed.OVSDBOnly())
	var args []string
	for i := 0; i < 10; i++ {
		args = append(args, "--", "add-br", fmt.Sprintf("br%d", i))
		for j := 0; j < 10; j++ {
			args = append(args, "--", "add-port", fmt.Sprintf("br%d", i), fmt.Sprintf("p%d-%d", i, j), fmt.Sprintf("tag=%d", j+1))
		}
	}
	benchVsctl(b, o, args...)
	p := New(plugin.Options{OVSDB: o.DBAddress})
	b.Cleanup(func() { p.Close() })
	return o, p
}

func BenchmarkQuery(b *testing.B) {
	o, p := benchHost(b)
	ctx := context.Background()
	b.Run("op-dbus-query", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := p.Query(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ovs-vsctl-show", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			benchVsctl(b, o, "show")
		}
	})
	b.Run("ovs-vsctl-list-interface-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			benchVsctl(b, o, "--format=json", "list", "Interface")
		}
	})
}

// 100 ports onto one bridge: op-dbus plans and applies them as one
// transaction (with its verification query), ovs-vsctl takes 100 calls.
func BenchmarkApply100Ports(b *testing.B) {
	o := testbed.NewOVS(b, testbed.OVSDBOnly())
	p := New(plugin.Options{OVSDB: o.DBAddress})
	b.Cleanup(func() { p.Close() })
	ctx := context.Background()
	var ports []string
	for j := 0; j < 100; j++ {
		ports = append(ports, fmt.Sprintf(`"bp%d": {"tag": %d}`, j, j+1))
	}
	e := engine.New([]plugin.Plugin{p})
	doc, err := state.Decode([]byte(`{"version": 1, "plugins": {"ovs": {"bridges": {"bb": {"ports": {`+strings.Join(ports, ",")+`}}}}}}`),
		state.FormatJSON, e.Types(), e.Validate)
	if err != nil {
		b.Fatal(err)
	}
	reset := func(b *testing.B) {
		b.StopTimer()
		benchVsctl(b, o, "--if-exists", "del-br", "bb", "--", "add-br", "bb")
		b.StartTimer()
	}
	b.Run("op-dbus-one-transaction", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			reset(b)
			plan, err := e.Plan(ctx, doc)
			if err != nil {
				b.Fatal(err)
			}
			if res := e.Apply(ctx, doc, plan); !res.Success {
				b.Fatal(res.Err)
			}
		}
	})
	b.Run("ovs-vsctl-100-add-port", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			reset(b)
			for j := 0; j < 100; j++ {
				benchVsctl(b, o, "add-port", "bb", fmt.Sprintf("bp%d", j), fmt.Sprintf("tag=%d", j+1))
			}
		}
	})
}
