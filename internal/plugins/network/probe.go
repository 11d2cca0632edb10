package network

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/op-dbus/op-dbus/internal/plugin"
)

// probeInterval is the gap between echo requests of one probe.
const probeInterval = 250 * time.Millisecond

// Probe implements plugin.Prober: every ping probe runs concurrently, in
// the plugin's network namespace; each that gets no echo reply within its
// timeout is reported as a Change naming the probe.
func (p *Plugin) Probe(ctx context.Context, desired any) ([]plugin.Change, error) {
	s, _ := desired.(*State)
	if s == nil || len(s.Probes) == 0 {
		return nil, nil
	}
	type result struct {
		ch  *plugin.Change
		err error
	}
	res := make([]result, len(s.Probes))
	var wg sync.WaitGroup
	for i, pr := range s.Probes {
		if pr == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("probes[%d].ping", i)
			want := pr.Ping + " answers ICMP echo within " + pr.timeout().String()
			_, err := p.ping(ctx, pr.Ping, pr.timeout())
			switch {
			case err == nil:
			case errors.Is(err, errNoReply):
				res[i].ch = &plugin.Change{Path: path, Desired: want, Current: err.Error()}
			default:
				res[i].err = fmt.Errorf("%s: %w", path, err)
			}
		}()
	}
	wg.Wait()
	var out []plugin.Change
	var errs []error
	for _, r := range res {
		if r.ch != nil {
			out = append(out, *r.ch)
		}
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	return out, errors.Join(errs...)
}

var errNoReply = errors.New("no echo reply")

// ping sends ICMP echo requests to target every probeInterval until a
// matching reply arrives or the timeout passes. It uses a raw ICMP socket
// (root), falling back to an unprivileged ping socket (net.ipv4.
// ping_group_range). The socket is opened inside the plugin's namespace.
func (p *Plugin) ping(ctx context.Context, target string, timeout time.Duration) (time.Duration, error) {
	dst, err := netip.ParseAddr(target)
	if err != nil {
		return 0, fmt.Errorf("invalid address %q", target)
	}
	dst = dst.Unmap()
	var conn *icmp.PacketConn
	var privileged bool
	err = p.inNetNS(func() error {
		conn, privileged, err = listenICMP(dst.Is6())
		return err
	})
	if err != nil {
		return 0, err
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !privileged {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	sent := map[int]time.Time{}
	send := func(seq int) error {
		typ := icmp.Type(ipv4.ICMPTypeEcho)
		if dst.Is6() {
			typ = ipv6.ICMPTypeEchoRequest
		}
		m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("op-dbus probe")}}
		b, err := m.Marshal(nil) // the kernel fills the IPv6 checksum
		if err != nil {
			return err
		}
		sent[seq] = time.Now()
		_, err = conn.WriteTo(b, to)
		return err
	}
	seq := 0
	var sendErr error
	next := time.Now()
	buf := make([]byte, 1500)
	for {
		now := time.Now()
		if ctx.Err() != nil || !now.Before(deadline) {
			err := fmt.Errorf("%w from %s within %s", errNoReply, target, timeout)
			if sendErr != nil {
				err = fmt.Errorf("%w (sending failed: %v)", err, sendErr)
			}
			return 0, err
		}
		if !now.Before(next) {
			seq++
			if err := send(seq); err != nil {
				sendErr = err
				var oe *net.OpError
				if errors.As(err, &oe) {
					sendErr = oe.Err // "sendto: network is unreachable"
				}
			}
			next = now.Add(probeInterval)
		}
		rd := next
		if deadline.Before(rd) {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				continue
			}
			return 0, fmt.Errorf("read ICMP socket: %w", err)
		}
		rid, rseq, ok := parseEchoReply(buf[:n], dst.Is6())
		// An unprivileged socket's ID is the kernel's (its port), so only
		// the sequence identifies our reply there.
		if ok && (rid == id || !privileged) {
			if t, mine := sent[rseq]; mine {
				return time.Since(t), nil
			}
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func listenICMP(v6 bool) (*icmp.PacketConn, bool, error) {
	rawNet, dgramNet, addr := "ip4:icmp", "udp4", "0.0.0.0"
	if v6 {
		rawNet, dgramNet, addr = "ip6:ipv6-icmp", "udp6", "::"
	}
	c, err := icmp.ListenPacket(rawNet, addr)
	if err == nil {
		return c, true, nil
	}
	c, err2 := icmp.ListenPacket(dgramNet, addr)
	if err2 == nil {
		return c, false, nil
	}
	return nil, false, fmt.Errorf("open ICMP socket: raw: %v; unprivileged: %v (run as root, or allow ping sockets with sysctl net.ipv4.ping_group_range)", err, err2)
}

// parseEchoReply reads an ICMP echo reply (without IP header, as the
// sockets above deliver it) and returns its ID and sequence.
func parseEchoReply(b []byte, v6 bool) (id, seq int, ok bool) {
	proto := 1
	if v6 {
		proto = 58
	}
	m, err := icmp.ParseMessage(proto, b)
	if err != nil {
		return 0, 0, false
	}
	if v6 && m.Type != ipv6.ICMPTypeEchoReply || !v6 && m.Type != ipv4.ICMPTypeEchoReply {
		return 0, 0, false
	}
	e, isEcho := m.Body.(*icmp.Echo)
	if !isEcho {
		return 0, 0, false
	}
	return e.ID, e.Seq, true
}
