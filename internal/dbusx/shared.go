package dbusx

import (
	"context"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// One process keeps one connection per bus address (DESIGN.md: "one
// connection per source, shared"). Every plugin, watcher and service of the
// process asks Shared for it; nobody but CloseShared closes it.
var shared = struct {
	mu    sync.Mutex
	conns map[string]*sharedEntry
}{conns: map[string]*sharedEntry{}}

type sharedEntry struct {
	conn *dbus.Conn
	// dialing is non-nil while one caller dials for this address; it is
	// closed when that dial ends, and the others look again.
	dialing chan struct{}
}

// Shared returns the process's connection to b: the live one if there is
// one, else a new one dialed with Open's timeouts (the first time, or after
// the old one was lost when the bus restarted). Concurrent callers get the
// same connection. Callers never Close it (CloseShared does); what they add
// to it — signal channels, match rules, exported objects, names — they
// remove themselves when they stop (see Subscribe).
func Shared(ctx context.Context, b Bus) (*dbus.Conn, error) {
	addr, err := b.Address()
	if err != nil {
		return nil, err
	}
	for {
		shared.mu.Lock()
		e := shared.conns[addr]
		if e == nil {
			e = &sharedEntry{}
			shared.conns[addr] = e
		}
		if e.conn != nil && e.conn.Connected() {
			c := e.conn
			shared.mu.Unlock()
			return c, nil
		}
		if e.dialing != nil {
			ch := e.dialing
			shared.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("connect to %s (%s): %w", b, addr, ctx.Err())
			}
		}
		ch := make(chan struct{})
		e.dialing = ch
		shared.mu.Unlock()

		c, err := Open(ctx, b)

		shared.mu.Lock()
		e.dialing = nil
		if err == nil {
			// CloseShared may have dropped e meanwhile: keep c where the
			// next CloseShared finds it.
			cur := shared.conns[addr]
			if cur == nil {
				cur = &sharedEntry{}
				shared.conns[addr] = cur
			}
			if cur != e && cur.conn != nil && cur.conn.Connected() {
				c.Close()
				c = cur.conn
			} else {
				cur.conn = c
			}
		}
		shared.mu.Unlock()
		close(ch)
		return c, err
	}
}

// CloseShared closes every shared connection; the next Shared dials anew.
// The CLI calls it where it closes its plugin set.
func CloseShared() error {
	shared.mu.Lock()
	var conns []*dbus.Conn
	for addr, e := range shared.conns {
		if e.conn != nil {
			conns = append(conns, e.conn)
		}
		delete(shared.conns, addr)
	}
	shared.mu.Unlock()
	var err error
	for _, c := range conns {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}
