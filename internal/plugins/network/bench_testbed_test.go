package network

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// runIP runs `ip ARGS...` as a process in the plugin's namespace (forked
// from a thread switched into it: no nsenter in the measurement).
func runIP(b *testing.B, p *Plugin, args ...string) {
	err := p.inNetNS(func() error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %v: %v %s", args, err, out)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkQuery compares the plugin's full query (links, addresses and
// routes of every table, both families) with what a user would run:
// `ip -j link show`, `ip -j addr show` and `ip -j route show`.
func BenchmarkQuery(b *testing.B) {
	bed, p := bedPlugin(b)
	populate(b, bed)
	for i := 0; i < 20; i++ {
		sh(b, bed, fmt.Sprintf("ip link add v%da type veth peer name v%db", i, i), fmt.Sprintf("ip addr add 10.30.%d.1/24 dev v%da", i, i))
	}
	b.Run("plugin", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := p.Query(tctx(b)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ip-j-link-addr-route", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			runIP(b, p, "-j", "link", "show")
			runIP(b, p, "-j", "addr", "show")
			runIP(b, p, "-j", "route", "show")
		}
	})
}

// BenchmarkApply100Addresses: one plan and apply (with verification) that
// puts 100 addresses on a link, against a loop of 100 `ip addr add`.
func BenchmarkApply100Addresses(b *testing.B) {
	bed, p := bedPlugin(b)
	sh(b, bed, "ip link add br0 type bridge", "ip link set br0 up")
	var addrs []string
	var cidrs []string
	for i := 0; i < 100; i++ {
		addrs = append(addrs, fmt.Sprintf(`{"ip":"10.40.%d.%d","prefix_length":32}`, i/250, i%250+1))
		cidrs = append(cidrs, fmt.Sprintf("10.40.%d.%d/32", i/250, i%250+1))
	}
	doc, err := decodeDoc(b, p, `{"interfaces":[{"name":"br0","ipv4":{"address":[`+strings.Join(addrs, ",")+`]}}]}`)
	if err != nil {
		b.Fatal(err)
	}
	flush := func(b *testing.B) {
		b.StopTimer()
		sh(b, bed, "ip addr flush dev br0")
		b.StartTimer()
	}
	b.Run("plugin-plan-apply-verify", func(b *testing.B) {
		e := newEngine(p)
		for i := 0; i < b.N; i++ {
			flush(b)
			pl, err := e.Plan(tctx(b), doc)
			if err != nil {
				b.Fatal(err)
			}
			if res := e.Apply(tctx(b), doc, pl); !res.Success {
				b.Fatal(res.Err)
			}
		}
	})
	b.Run("ip-addr-add-x100", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			flush(b)
			for _, c := range cidrs {
				runIP(b, p, "addr", "add", c, "dev", "br0")
			}
		}
	})
}
