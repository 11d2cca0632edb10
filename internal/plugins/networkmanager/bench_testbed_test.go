package networkmanager

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"
)

// BenchmarkTestbedQuery compares a full query (every profile's settings,
// active connections, devices) with what a user would run for the same
// picture: `nmcli -t -f all connection show` plus `nmcli -t device show`
// (summary only), and that plus `nmcli -t connection show ID` per profile
// (the settings, as query reads them). Twelve bridge profiles, ten active.
func BenchmarkTestbedQuery(b *testing.B) {
	nm, _, _ := bed(b)
	p := NewAt(nm.BusAddress)
	defer p.Close()
	ctx := context.Background()
	var ids []string
	for i := 0; i < 12; i++ {
		id := fmt.Sprintf("bb%d", i)
		ids = append(ids, id)
		args := []string{"connection", "add", "type", "bridge", "con-name", id, "ifname", id,
			"ipv4.method", "manual", "ipv4.addresses", fmt.Sprintf("10.90.%d.1/24", i), "ipv6.method", "disabled"}
		if i >= 10 {
			args = append(args, "connection.autoconnect", "no")
		}
		if out, err := nm.Nmcli(ctx, args...); err != nil {
			b.Fatalf("%v %s", err, out)
		}
	}
	time.Sleep(4 * time.Second) // let the ten activate
	nmcli := func(b *testing.B, args ...string) {
		cmd := exec.CommandContext(ctx, "nmcli", args...)
		cmd.Env = nm.Env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("nmcli %v: %v %s", args, err, out)
		}
	}
	b.Run("op-dbus-query", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			st, err := p.Query(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if n := len(st.(*State).Connections); n != 12 {
				b.Fatalf("%d connections", n)
			}
		}
	})
	b.Run("op-dbus-observe", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := p.Observe(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nmcli-list+device-show", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			nmcli(b, "-t", "-f", "all", "connection", "show")
			nmcli(b, "-t", "device", "show")
		}
	})
	b.Run("nmcli-list+device-show+each-profile", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			nmcli(b, "-t", "-f", "all", "connection", "show")
			nmcli(b, "-t", "device", "show")
			for _, id := range ids {
				nmcli(b, "-t", "connection", "show", id)
			}
		}
	})
}
