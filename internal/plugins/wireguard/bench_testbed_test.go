package wireguard

import (
	"context"
	"fmt"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/state"
)

// Benchmarks inside a bed with one userspace device (see benchInBed),
// each against what a user would run instead: wg(8).
//
//	go test -run '^$' -bench Testbed -benchtime 2s ./plugins/wireguard/

const benchPeers = 100

// peersDoc returns a document with n peers on wg0 and the peers' keys.
func peersDoc(b *testing.B, n int) (string, []wgtypes.Key) {
	keys := make([]wgtypes.Key, n)
	var peers []string
	for i := range keys {
		keys[i] = genKey(b).PublicKey()
		peers = append(peers, fmt.Sprintf(`%q:{"endpoint":"192.0.2.%d:51820","allowed_ips":["10.0.%d.%d/32"],"persistent_keepalive":25}`, keys[i].String(), i%250+1, i/250, i%250+1))
	}
	return `{"version":1,"plugins":{"wireguard":{"interfaces":{"wg0":{"listen_port":51820,"peers":{` + strings.Join(peers, ",") + `}}}}}}`, keys
}

func removeAllPeers(b *testing.B) {
	c, err := wgctrl.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.ConfigureDevice("wg0", wgtypes.Config{ReplacePeers: true}); err != nil {
		b.Fatal(err)
	}
}

// Query of one device with 100 peers: the plugin in-process vs
// `wg show all dump`.
func BenchmarkTestbedQuery(b *testing.B) {
	benchInBed(b, []string{"wg0"}, func(b *testing.B, dir string) {
		p := New(plugin.Options{})
		defer p.Close()
		doc, _ := peersDoc(b, benchPeers)
		h := &harness{p: p, eng: engine.New([]plugin.Plugin{p})}
		applyDoc(b, h, doc)
		ctx := context.Background()
		b.Run("op-dbus-query", func(b *testing.B) {
			for b.Loop() {
				st, err := p.Query(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if n := len(st.(*State).Interfaces["wg0"].Peers); n != benchPeers {
					b.Fatalf("%d peers", n)
				}
			}
		})
		b.Run("wg-show-all-dump", func(b *testing.B) {
			for b.Loop() {
				out, err := osexec.Command("wg", "show", "all", "dump").Output()
				if err != nil {
					b.Fatal(err)
				}
				if n := strings.Count(string(out), "\n"); n != benchPeers+1 {
					b.Fatalf("%d lines", n)
				}
			}
		})
	})
}

// Apply of 100 new peers: plan + one ConfigureDevice + verify through the
// engine, vs one `wg set` per peer (as a shell loop would), vs one `wg set`
// naming all peers.
func BenchmarkTestbedApplyPeers(b *testing.B) {
	benchInBed(b, []string{"wg0"}, func(b *testing.B, dir string) {
		p := New(plugin.Options{})
		defer p.Close()
		doc, keys := peersDoc(b, benchPeers)
		h := &harness{p: p, eng: engine.New([]plugin.Plugin{p})}
		b.Run("op-dbus-apply", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				removeAllPeers(b)
				b.StartTimer()
				applyDoc(b, h, doc)
			}
		})
		setArgs := func(i int) []string {
			return []string{"peer", keys[i].String(), "endpoint", fmt.Sprintf("192.0.2.%d:51820", i%250+1),
				"allowed-ips", fmt.Sprintf("10.0.%d.%d/32", i/250, i%250+1), "persistent-keepalive", "25"}
		}
		b.Run("wg-set-loop", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				removeAllPeers(b)
				b.StartTimer()
				if err := osexec.Command("wg", "set", "wg0", "listen-port", "51820").Run(); err != nil {
					b.Fatal(err)
				}
				for i := range keys {
					if out, err := osexec.Command("wg", append([]string{"set", "wg0"}, setArgs(i)...)...).CombinedOutput(); err != nil {
						b.Fatalf("%v %s", err, out)
					}
				}
			}
		})
		b.Run("wg-set-once", func(b *testing.B) {
			args := []string{"set", "wg0", "listen-port", "51820"}
			for i := range keys {
				args = append(args, setArgs(i)...)
			}
			for b.Loop() {
				b.StopTimer()
				removeAllPeers(b)
				b.StartTimer()
				if out, err := osexec.Command("wg", args...).CombinedOutput(); err != nil {
					b.Fatalf("%v %s", err, out)
				}
			}
		})
	})
}

func applyDoc(b *testing.B, h *harness, doc string) {
	d, err := state.Decode([]byte(doc), state.FormatJSON, h.eng.Types(), h.eng.Validate)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pl, err := h.eng.Plan(ctx, d)
	if err != nil {
		b.Fatal(err)
	}
	if res := h.eng.Apply(ctx, d, pl); !res.Success {
		b.Fatalf("apply: %v", res.Err)
	}
}
