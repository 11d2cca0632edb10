package network

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/op-dbus/op-dbus/internal/plugin"
	"github.com/op-dbus/op-dbus/internal/testbed"
)

var _ plugin.Watcher = (*Plugin)(nil)

// watchWait bounds each wait for a notification; generous, the tests
// check that one comes, not how fast.
const watchWait = 30 * time.Second

// watching is a p.Watch running until the test ends: sig holds one token
// when changed has been called since the last take (calls while a token
// is pending are merged, never blocking), done closes when Watch returns.
type watching struct {
	sig  chan struct{}
	done chan struct{} // closed when Watch has returned, err set
	err  error
}

// ended reports Watch's result if it has returned.
func (w *watching) ended() (bool, error) {
	select {
	case <-w.done:
		return true, w.err
	default:
		return false, nil
	}
}

func startWatch(t *testing.T, p *Plugin, changed func(w *watching)) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watching{sig: make(chan struct{}, 1), done: make(chan struct{})}
	if changed == nil {
		changed = func(*watching) {}
	}
	go func() {
		defer close(w.done)
		w.err = p.Watch(ctx, func() {
			changed(w)
			select {
			case w.sig <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
			if w.err != nil {
				t.Errorf("Watch returned %v when its context ended, want nil", w.err)
			}
		case <-time.After(watchWait):
			t.Errorf("Watch did not return within %s of its context ending", watchWait)
		}
	})
	return w
}

// next waits for a changed call.
func (w *watching) next(t *testing.T, after string) {
	t.Helper()
	select {
	case <-w.sig:
	case <-w.done:
		t.Fatalf("Watch returned %v, waiting for a notification after %s", w.err, after)
	case <-time.After(watchWait):
		t.Fatalf("no changed() within %s after %s", watchWait, after)
	}
}

// quiet waits until changed has not been called for a while (the kernel's
// follow-up notifications of the last step, IPv6 DAD and the like, are
// through) and then empties the signal, so that the next notification is
// known to come from the next step.
func (w *watching) quiet(t *testing.T) {
	t.Helper()
	const still = 300 * time.Millisecond
	deadline := time.Now().Add(watchWait)
	for {
		select {
		case <-w.sig:
			if time.Now().After(deadline) {
				t.Fatalf("notifications did not stop within %s", watchWait)
			}
		case <-w.done:
			t.Fatalf("Watch returned %v", w.err)
		case <-time.After(still):
			return
		}
	}
}

// Each kind of change the plugin reads (link created, addresses of both
// families, routes of both families and of another table, link up, MTU)
// is announced, in a plugin aimed at the bed's namespace from outside it.
func TestTestbedWatchAnnouncesLinkAddressRouteChanges(t *testing.T) {
	bed, p := bedPlugin(t)
	w := startWatch(t, p, nil)
	w.next(t, "subscribing") // the first call, before any change
	for _, step := range []string{
		"ip link add d0 type veth peer name d1",
		"ip addr add 10.9.0.1/24 dev d0",
		"ip link set d0 up",
		"ip route add 10.5.0.0/24 dev d0",
		"ip -6 addr add 2001:db8:9::1/64 dev d0 nodad",
		"ip -6 route add 2001:db8:5::/64 dev d0 metric 7",
		"ip route add blackhole 10.6.0.0/24 table 100",
		"ip link set d0 mtu 1400",
		"ip link add br0 type bridge",
		"ip link set d0 master br0",
		"ip route del 10.5.0.0/24 dev d0",
		"ip addr del 10.9.0.1/24 dev d0",
		"ip link del br0",
	} {
		w.quiet(t)
		sh(t, bed, step)
		w.next(t, step)
	}
	// The last notification was not spurious: the plugin reads the change.
	st, err := p.Query(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range st.(*State).Interfaces {
		if ifc.Name == "br0" {
			t.Errorf("br0 still in the query after ip link del")
		}
		if ifc.Name == "d0" && (deref(ifc.MTU) != 1400 || deref(ifc.Controller) != "") {
			t.Errorf("d0 mtu %d controller %q, want 1400 and none", deref(ifc.MTU), deref(ifc.Controller))
		}
	}
}

// Watch returns nil when its context ends and leaves no goroutine (the
// socket's closer, the reader) behind, over many subscribe/cancel rounds.
func TestTestbedWatchCancelReturnsNilNoLeak(t *testing.T) {
	bed, p := bedPlugin(t)
	if err := p.Available(tctx(t)); err != nil { // open the handle first
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	const rounds = 20
	for i := 0; i < rounds; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		got := make(chan struct{}, 1)
		errc := make(chan error, 1)
		go func() {
			errc <- p.Watch(ctx, func() {
				select {
				case got <- struct{}{}:
				default:
				}
			})
		}()
		select {
		case <-got:
		case err := <-errc:
			cancel()
			t.Fatalf("round %d: Watch returned %v before subscribing", i, err)
		case <-time.After(watchWait):
			cancel()
			t.Fatalf("round %d: no first changed() call", i)
		}
		if i == 0 {
			// With the reader blocked in recv: a change still arrives,
			// then the cancel must end the blocked read.
			sh(t, bed, "ip link add w0 type bridge")
		}
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("round %d: Watch returned %v after cancel, want nil", i, err)
			}
		case <-time.After(watchWait):
			t.Fatalf("round %d: Watch still running %s after cancel", i, watchWait)
		}
	}
	// Goroutines of the runtime and the testing package come and go; a
	// leak of one per round would show as rounds more.
	var now int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if now = runtime.NumGoroutine(); now <= before+2 || time.Now().After(deadline) {
			break
		}
	}
	if now > before+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before %d Watch rounds, %d after:\n%s", before, rounds, now, buf[:runtime.Stack(buf, true)])
	}
	// And no socket left bound to the groups in the bed.
	if n := watchSockets(t, bed); len(n) != 0 {
		t.Fatalf("rtnetlink sockets still subscribed after cancel: %v", n)
	}
}

// Watch returns nil right away for a context that has already ended.
func TestTestbedWatchEndedContext(t *testing.T) {
	_, p := bedPlugin(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	if err := p.Watch(ctx, func() { called = true }); err != nil || called {
		t.Fatalf("Watch on an ended context: %v, changed called %v", err, called)
	}
}

// A namespace that cannot be entered is an error that names it, at once
// (the daemon logs it and retries with back-off).
func TestWatchBadNamespace(t *testing.T) {
	p := New(Options{NetNS: "/nonexistent/op-dbus-test/ns/net"})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), watchWait)
	defer cancel()
	err := p.Watch(ctx, func() { t.Error("changed called without a subscription") })
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/op-dbus-test/ns/net") {
		t.Fatalf("Watch in a missing namespace: %v, want an error naming the path", err)
	}
}

// watchSockets lists the rows of the bed's /proc/net/netlink that belong
// to rtnetlink sockets bound to exactly Watch's groups: [inode, drops].
func watchSockets(t *testing.T, bed *testbed.NetNS) [][2]string {
	t.Helper()
	var mask uint64
	for _, g := range watchGroups {
		mask |= 1 << (g - 1)
	}
	out, err := bed.Exec(tctx(t), "cat", "/proc/net/netlink")
	if err != nil {
		t.Fatalf("read /proc/net/netlink in the bed: %v", err)
	}
	var rows [][2]string
	for _, line := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(line)
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		if len(f) < 10 || f[1] != "0" {
			continue
		}
		g, err := strconv.ParseUint(f[3], 16, 64)
		if err != nil || g != mask {
			continue
		}
		rows = append(rows, [2]string{f[9], f[8]})
	}
	return rows
}

// When a burst overflows the socket's receive buffer (the kernel drops
// notifications and recv reports ENOBUFS), Watch calls changed and keeps
// watching on the same socket instead of ending: the drop is real (the
// kernel counts it in /proc/net/netlink), Watch has not returned, and a
// later change is still announced.
func TestTestbedWatchOverflowKeepsWatching(t *testing.T) {
	bed, p := bedPlugin(t)
	old := watchRcvBuf
	watchRcvBuf = 1 // the kernel's minimum, a few KiB: a handful of messages
	t.Cleanup(func() { watchRcvBuf = old })

	sh(t, bed, "ip link add b0 type bridge")
	release := make(chan struct{})
	var first atomic.Bool
	w := startWatch(t, p, func(*watching) {
		// Play a reader that falls behind: hold the first call until
		// the burst is in (changed never blocks in the daemon).
		if !first.Swap(true) {
			<-release
		}
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before startWatch's cleanup waits for Watch
	// Wait until the socket is bound (it shows in /proc/net/netlink).
	deadline := time.Now().Add(watchWait)
	for len(watchSockets(t, bed)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the watch socket never appeared in /proc/net/netlink")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var batch strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&batch, "addr add 10.77.%d.1/32 dev b0\n", i)
	}
	file := filepath.Join(bed.Dir, "burst.batch")
	if err := os.WriteFile(file, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(t, bed, "ip -batch "+file)
	socks := watchSockets(t, bed)
	if len(socks) != 1 || socks[0][1] == "0" {
		t.Fatalf("the burst did not overflow the watch socket (inode, drops): %v", socks)
	}
	unblock()
	w.next(t, "the overflow")
	w.quiet(t)
	if ended, err := w.ended(); ended {
		t.Fatalf("Watch returned %v after the overflow, want it to keep watching", err)
	}
	if after := watchSockets(t, bed); len(after) != 1 || after[0][0] != socks[0][0] {
		t.Fatalf("the watch socket changed after the overflow: %v, before %v", after, socks)
	}
	sh(t, bed, "ip link set b0 mtu 1300")
	w.next(t, "a change after the overflow")
}

// BenchmarkWatchLatency measures from an MTU change (a netlink request
// from this process into the bed) to the notification: the plugin's Watch
// calling changed, against `ip monitor link` (what a user would run to
// watch links) printing the change. Both rounds pause 2 ms (untimed)
// between changes, so that the late second notification of a change
// (the kernel sends RTM_NEWLINK for NETDEV_CHANGEMTU and again for the
// state change) is not taken for the next one's.
func BenchmarkWatchLatency(b *testing.B) {
	bed, p := bedPlugin(b)
	sh(b, bed, "ip link add m0 type bridge")
	setMTU := func(mtu int) {
		err := p.call(tctx(b), "set mtu", func(h *netlink.Handle) error {
			l, err := h.LinkByName("m0")
			if err != nil {
				return err
			}
			return h.LinkSetMTU(l, mtu)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// Every call a different value from the last (across b.Run rounds):
	// an unchanged MTU is no change, and the kernel announces nothing.
	n := 0
	next := func() int { n++; return 1300 + n%100 }

	b.Run("plugin-watch", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		sig := make(chan struct{}, 1)
		done := make(chan error, 1)
		go func() {
			done <- p.Watch(ctx, func() {
				select {
				case sig <- struct{}{}:
				default:
				}
			})
		}()
		defer func() { cancel(); <-done }()
		<-sig
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			time.Sleep(2 * time.Millisecond) // late notifications of the last change
			select {
			case <-sig:
			default:
			}
			m := next()
			b.StartTimer()
			setMTU(m)
			select {
			case <-sig:
			case <-time.After(watchWait):
				b.Fatal("no notification")
			}
		}
	})
	b.Run("ip-monitor-link", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := bed.Command(ctx, nil, "ip", "-o", "monitor", "link")
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait until it listens: a change it prints.
		for want := " mtu 1499 "; ; {
			setMTU(1499)
			setMTU(1500)
			select {
			case l := <-lines:
				if strings.Contains(l, want) || strings.Contains(l, " mtu 1500 ") {
					goto ready
				}
			case <-time.After(100 * time.Millisecond):
			}
		}
	ready:
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			time.Sleep(2 * time.Millisecond) // as above: same conditions
			m := next()
			want := fmt.Sprintf(" mtu %d ", m)
			b.StartTimer()
			setMTU(m)
			for l := range lines {
				if strings.Contains(l, want) {
					break
				}
			}
		}
	})
}
