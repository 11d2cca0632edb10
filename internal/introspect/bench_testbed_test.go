package introspect

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

// The busctl route: `busctl tree` for the paths, then `busctl introspect`
// of every object (which also reads property values, interface by
// interface). gdbus: `gdbus introspect --recurse`, which reads values of
// the objects it visits.

func benchWalk(b *testing.B, addr string, services ...string) {
	conn, err := dbus.Connect(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var last *Result
	for range b.N {
		w := &Walker{Conn: conn, Services: services}
		res, err := w.Walk(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		last = res
	}
	b.ReportMetric(float64(last.Stats.Objects), "objects")
	b.ReportMetric(float64(last.Stats.Calls), "calls")
	b.ReportMetric(float64(last.Stats.Objects)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
}

func benchBusctl(b *testing.B, bc []string, env []string, service string) {
	calls := 0
	for range b.N {
		tree := exec.Command("busctl", append(append([]string{}, bc...), "tree", "--list", service)...)
		tree.Env = env
		out, err := tree.Output()
		if err != nil {
			b.Fatal(err)
		}
		paths := strings.Fields(string(out))
		calls = 1
		for _, p := range paths {
			cmd := exec.Command("busctl", append(append([]string{}, bc...), "introspect", "--no-pager", service, p)...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v %s", err, out)
			}
			calls++
		}
		b.ReportMetric(float64(len(paths)), "objects")
	}
	b.ReportMetric(float64(calls), "processes")
}

func benchGdbus(b *testing.B, addr, service, root string) {
	for range b.N {
		if out, err := exec.Command("gdbus", "introspect", "--address", addr, "--dest", service, "--object-path", root, "--recurse").CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
}

func BenchmarkIntrospectTestService1000(b *testing.B) {
	bus, _ := serveTest(b, 1000)
	b.Run("op-dbus", func(b *testing.B) { benchWalk(b, bus.Address, "org.opdbus.Test1") })
	b.Run("busctl-tree+introspect-each", func(b *testing.B) {
		benchBusctl(b, []string{"--address=" + bus.Address}, bus.Env, "org.opdbus.Test1")
	})
	b.Run("gdbus-introspect-recurse", func(b *testing.B) { benchGdbus(b, bus.Address, "org.opdbus.Test1", "/") })
}

func BenchmarkIntrospectUserManager(b *testing.B) {
	m := testbed.NewUserManager(b)
	b.Run("op-dbus", func(b *testing.B) { benchWalk(b, m.BusAddress, "org.freedesktop.systemd1") })
	b.Run("busctl-tree+introspect-each", func(b *testing.B) {
		benchBusctl(b, []string{"--user"}, m.Env, "org.freedesktop.systemd1")
	})
	b.Run("gdbus-introspect-recurse", func(b *testing.B) { benchGdbus(b, m.BusAddress, "org.freedesktop.systemd1", "/") })
}
