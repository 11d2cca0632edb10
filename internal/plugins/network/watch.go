package network

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// watchGroups are the rtnetlink multicast groups whose notifications can
// concern the plugin's state: links (create, delete, mtu, flags, master,
// MAC), IPv4 and IPv6 addresses, and IPv4 and IPv6 routes of every table.
var watchGroups = []uint{
	unix.RTNLGRP_LINK,
	unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV6_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE,
	unix.RTNLGRP_IPV6_ROUTE,
}

// watchRcvBuf is the receive buffer asked for the multicast socket
// (SO_RCVBUFFORCE, which root may set beyond net.core.rmem_max; without
// that privilege SO_RCVBUF, capped at rmem_max). A burst bigger than the
// buffer before Watch reads it costs an ENOBUFS (see Watch). A variable so
// that a test can make it overflow; not changed otherwise.
var watchRcvBuf = 4 << 20

// Watch implements plugin.Watcher: one rtnetlink socket in the plugin's
// network namespace, bound to the link, IPv4/IPv6 address and IPv4/IPv6
// route multicast groups. changed runs once as soon as the socket is
// bound, then once for every batch of kernel notifications read from it
// (a batch may hold several; notifications that turn out not to concern
// the document, such as the local table's routes, only cost a re-query).
// Nothing of the messages is decoded: the daemon re-queries anyway.
//
// When the kernel drops notifications because the socket's receive buffer
// overflowed (recv returns ENOBUFS), the socket itself stays subscribed
// and usable, so Watch calls changed (what was dropped is unknown; the
// re-query covers it) and goes on reading rather than returning: the
// daemon would only subscribe again and get the same changed call, after
// a back-off and a "retrying" log line. Any other failure of the socket
// returns an error naming the namespace, and the daemon subscribes again.
//
// Watch returns nil when ctx ends; the socket is closed and the reading
// loop has ended by then.
func (p *Plugin) Watch(ctx context.Context, changed func()) error {
	if ctx.Err() != nil {
		return nil
	}
	s, err := p.subscribe()
	if err != nil {
		return err
	}
	// Closing the socket ends a blocked Receive (the socket is
	// non-blocking under Go's poller), so ctx bounds every read.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-stop:
		}
		s.Close()
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	changed() // what changed before the socket was bound was not seen
	for {
		msgs, from, err := s.Receive()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, unix.ENOBUFS):
			changed() // notifications were dropped: re-query
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("watch links, addresses and routes%s: read rtnetlink notifications: %w", p.where(), err)
		}
		if from.Pid != nl.PidKernel || len(msgs) == 0 {
			continue // only the kernel announces changes
		}
		changed()
	}
}

// subscribe opens the multicast socket inside the plugin's namespace.
func (p *Plugin) subscribe() (*nl.NetlinkSocket, error) {
	var s *nl.NetlinkSocket
	err := p.inNetNS(func() error {
		var err error
		s, err = nl.Subscribe(unix.NETLINK_ROUTE, watchGroups...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("watch links, addresses and routes%s: subscribe to rtnetlink multicast groups: %w", p.where(), explain(err))
	}
	if err := s.SetReceiveBufferSize(watchRcvBuf, true); err != nil {
		_ = s.SetReceiveBufferSize(watchRcvBuf, false) // best effort: the default still works
	}
	return s, nil
}

// where names the namespace for messages: "" for the process's own.
func (p *Plugin) where() string {
	if p.opts.NetNS == "" {
		return ""
	}
	return " in network namespace " + p.opts.NetNS
}
