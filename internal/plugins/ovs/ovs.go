package ovs

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/go-logr/logr"
	"github.com/ovn-kubernetes/libovsdb/cache"
	"github.com/ovn-kubernetes/libovsdb/client"
	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"

	"github.com/op-dbus/op-dbus/internal/netcheck"
	"github.com/op-dbus/op-dbus/internal/plugin"
)

// DefaultAddress is where Debian's openvswitch-switch puts ovsdb-server.
const DefaultAddress = "unix:/var/run/openvswitch/db.sock"

var (
	// ConnectTimeout bounds connecting (and reading the schema).
	ConnectTimeout = 5 * time.Second
	// CallTimeout bounds one OVSDB transaction.
	CallTimeout = 30 * time.Second
	// VswitchdTimeout bounds the wait for ovs-vswitchd to carry out a
	// committed change (cur_cfg catching up with next_cfg).
	VswitchdTimeout = 15 * time.Second
)

func init() {
	plugin.Register("ovs", func(o plugin.Options) plugin.Plugin { return New(o) })
}

// Plugin is the ovs plugin.
type Plugin struct {
	addr string

	mu  sync.Mutex
	cli client.Client

	watchMu  sync.Mutex
	watching bool
	watchers map[int]func()
	nextW    int
}

// New returns the plugin for o.OVSDB (DefaultAddress when empty).
func New(o plugin.Options) *Plugin {
	addr := o.OVSDB
	if addr == "" {
		addr = DefaultAddress
	}
	return &Plugin{addr: addr, watchers: map[int]func(){}}
}

func (p *Plugin) Name() string    { return "ovs" }
func (p *Plugin) NewState() any   { return &State{} }
func (p *Plugin) After() []string { return nil }

// Address is the ovsdb-server address the plugin talks to.
func (p *Plugin) Address() string { return p.addr }

// Close drops the connection.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cli != nil {
		p.cli.Close()
		p.cli = nil
	}
	p.watchMu.Lock()
	p.watching = false
	p.watchMu.Unlock()
	return nil
}

// connect returns the connected client, connecting on first use. The
// client reconnects by itself after a lost connection (and restarts the
// monitor Watch set up); calls made meanwhile wait for it up to their
// context.
func (p *Plugin) connect(ctx context.Context) (client.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cli != nil {
		return p.cli, nil
	}
	if err := checkAddress(p.addr); err != nil {
		return nil, err
	}
	dbModel, err := clientModel()
	if err != nil {
		return nil, fmt.Errorf("ovs: database model: %w", err)
	}
	discard := logr.Discard()
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval = 5 * time.Second
	bo.MaxElapsedTime = 0 // keep trying; calls are bounded by their own contexts
	cli, err := client.NewOVSDBClient(dbModel,
		client.WithEndpoint(p.addr),
		client.WithReconnect(ConnectTimeout, bo),
		client.WithLogger(&discard))
	if err != nil {
		return nil, fmt.Errorf("ovs: %s: %w", p.addr, err)
	}
	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := cli.Connect(cctx); err != nil {
		cli.Close()
		return nil, p.connectError(err)
	}
	p.cli = cli
	return cli, nil
}

// checkAddress accepts the connection methods op-dbus supports.
func checkAddress(addr string) error {
	method, rest, ok := strings.Cut(addr, ":")
	if !ok || rest == "" || (method != "unix" && method != "tcp") {
		return fmt.Errorf("ovsdb address %q is not unix:PATH or tcp:HOST:PORT (pass --ovsdb unix:/var/run/openvswitch/db.sock)", addr)
	}
	return nil
}

// connectError explains a failed connect: nothing listening, or a peer
// that does not speak OVSDB.
func (p *Plugin) connectError(err error) error {
	var errno syscall.Errno
	var opErr *net.OpError
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &opErr):
		return fmt.Errorf("ovsdb-server not reachable at %s: %v (start openvswitch-switch or pass --ovsdb)", p.addr, unwrapConnect(err))
	case errors.As(err, &errno):
		return fmt.Errorf("ovsdb-server not reachable at %s: %v (start openvswitch-switch or pass --ovsdb)", p.addr, unwrapConnect(err))
	case strings.Contains(err.Error(), "listdbs failure"):
		_, detail, _ := strings.Cut(err.Error(), "listdbs failure - ")
		return fmt.Errorf("ovsdb-server at %s: the peer does not speak OVSDB JSON-RPC (list_dbs answered with: %s); is --ovsdb pointing at ovsdb-server's socket?", p.addr, detail)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("ovsdb-server at %s did not answer within %s (is it ovsdb-server? is it hung?)", p.addr, ConnectTimeout)
	}
	return fmt.Errorf("ovsdb-server at %s: %v (is --ovsdb pointing at ovsdb-server's socket, with the Open_vSwitch database?)", p.addr, unwrapConnect(err))
}

// unwrapConnect drops libovsdb's "failed to connect to ADDR:" prefix, which
// repeats the address the caller already names.
func unwrapConnect(err error) string {
	s := err.Error()
	if i := strings.Index(s, ": failed to open connection: "); i >= 0 {
		return s[i+len(": failed to open connection: "):]
	}
	if strings.HasPrefix(s, "failed to connect to ") {
		if i := strings.Index(s, ": "); i >= 0 {
			return s[i+2:]
		}
	}
	return s
}

// Available implements plugin.Plugin: connect (once) and ask the server
// something, so a socket that answers garbage is caught here.
func (p *Plugin) Available(ctx context.Context) error {
	cli, err := p.connect(ctx)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, ConnectTimeout)
	defer cancel()
	if err := cli.Echo(cctx); err != nil {
		return fmt.Errorf("ovsdb-server at %s does not answer: %v (is it running? start openvswitch-switch or pass --ovsdb)", p.addr, err)
	}
	return nil
}

// snapshot is one consistent read of the tables the plugin manages.
type snapshot struct {
	root    *rootRow
	bridges map[string]*bridgeRow // by name
	ports   map[string]*portRow   // by UUID
	ifaces  map[string]*ifaceRow  // by UUID
}

// read selects the four tables in one transaction: a consistent picture
// that is never older than the call (unlike a monitor's cache).
func (p *Plugin) read(ctx context.Context) (*snapshot, error) {
	cli, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	tables := []string{tRoot, tBridge, tPort, tIface}
	ops := make([]ovsdb.Operation, len(tables))
	for i, t := range tables {
		ops[i] = ovsdb.Operation{Op: ovsdb.OperationSelect, Table: t, Columns: columns[t]}
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	res, err := cli.Transact(cctx, ops...)
	if err != nil {
		return nil, fmt.Errorf("read from ovsdb-server at %s: %w", p.addr, err)
	}
	if len(res) < len(ops) {
		return nil, fmt.Errorf("read from ovsdb-server at %s: %d results for %d selects", p.addr, len(res), len(ops))
	}
	dbm := cli.Cache().DatabaseModel()
	s := &snapshot{bridges: map[string]*bridgeRow{}, ports: map[string]*portRow{}, ifaces: map[string]*ifaceRow{}}
	for i, t := range tables {
		if res[i].Error != "" {
			return nil, fmt.Errorf("read %s table from %s: %s: %s", t, p.addr, res[i].Error, res[i].Details)
		}
		for _, row := range res[i].Rows {
			uuid := ""
			if u, ok := row["_uuid"].(ovsdb.UUID); ok {
				uuid = u.GoUUID
			}
			m, err := model.CreateModel(dbm, t, &row, uuid)
			if err != nil {
				return nil, fmt.Errorf("read %s table from %s: %w", t, p.addr, err)
			}
			switch r := m.(type) {
			case *rootRow:
				s.root = r
			case *bridgeRow:
				s.bridges[r.Name] = r
			case *portRow:
				s.ports[r.UUID] = r
			case *ifaceRow:
				s.ifaces[r.UUID] = r
			}
		}
	}
	return s, nil
}

// Query implements plugin.Plugin: every bridge with every port and
// interface, each map and nullable column given explicitly so that the
// result, applied later, restores exactly what it captured.
func (p *Plugin) Query(ctx context.Context) (any, error) {
	s, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	return s.state(), nil
}

func (s *snapshot) state() *State {
	st := &State{Bridges: map[string]*Bridge{}}
	for name, br := range s.bridges {
		b := &Bridge{
			DatapathType: normDatapath(br.DatapathType),
			FailMode:     "standalone",
			ExternalIDs:  copyMap(br.ExternalIDs),
			OtherConfig:  copyMap(br.OtherConfig),
			Ports:        map[string]*Port{},
		}
		if br.FailMode != nil && *br.FailMode != "" {
			b.FailMode = *br.FailMode
		}
		for _, pu := range br.Ports {
			pr, ok := s.ports[pu]
			if !ok {
				continue
			}
			port := &Port{
				Tag:         rawInt(pr.Tag),
				Trunks:      sortedInts(pr.Trunks),
				ExternalIDs: copyMap(pr.ExternalIDs),
				Interfaces:  map[string]*Interface{},
			}
			for _, iu := range pr.Interfaces {
				ir, ok := s.ifaces[iu]
				if !ok {
					continue
				}
				port.Interfaces[ir.Name] = ir.state()
			}
			b.Ports[pr.Name] = port
		}
		st.Bridges[name] = b
	}
	return st
}

func (ir *ifaceRow) state() *Interface {
	in := &Interface{
		Type:        normType(ir.Type),
		Options:     copyMap(ir.Options),
		MTURequest:  rawInt(ir.MTURequest),
		ExternalIDs: copyMap(ir.ExternalIDs),
		OFPort:      ir.OFPort,
		MTU:         ir.MTU,
	}
	if ir.AdminState != nil {
		in.AdminState = *ir.AdminState
	}
	if ir.LinkState != nil {
		in.LinkState = *ir.LinkState
	}
	if ir.Error != nil {
		in.Error = *ir.Error
	}
	return in
}

// normType: OVS's empty interface type is "system".
func normType(t string) string {
	if t == "" {
		return "system"
	}
	return t
}

// normDatapath: OVS's empty datapath_type is "system".
func normDatapath(t string) string {
	if t == "" {
		return "system"
	}
	return t
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sortedInts is a sorted copy of v that is never nil: an empty trunks list
// ([] = all VLANs) must stay distinct from a missing one (not managed),
// which slices.Sorted would not keep.
func sortedInts(v []int) []int {
	out := append([]int{}, v...)
	sort.Ints(out)
	return out
}

// kernelTypes are the interface types that are kernel network devices
// with the same name; the rest (patch, tunnels in the userspace datapath,
// dpdk) exist only inside OVS.
var kernelTypes = map[string]bool{"": true, "system": true, "internal": true, "tap": true}

// Observe implements the check network source "ovsdb": one observation per
// Interface row that is a kernel device (system, internal, tap). Exists is
// false when ovs-vswitchd reports it could not open it (ofport -1 or an
// error). MTU and State come from what ovs-vswitchd last wrote (mtu,
// admin_state); addresses are not OVSDB's business and stay unknown. The
// master is the bridge, except for the bridge's own internal port.
func (p *Plugin) Observe(ctx context.Context) ([]netcheck.Observation, error) {
	s, err := p.read(ctx)
	if err != nil {
		return nil, err
	}
	var out []netcheck.Observation
	for _, bn := range slices.Sorted(maps.Keys(s.bridges)) {
		br := s.bridges[bn]
		for _, pu := range br.Ports {
			pr, ok := s.ports[pu]
			if !ok {
				continue
			}
			for _, iu := range pr.Interfaces {
				ir, ok := s.ifaces[iu]
				if !ok || !kernelTypes[ir.Type] {
					continue
				}
				o := netcheck.Observation{Source: "ovsdb", Interface: ir.Name, Exists: true, KnownMaster: true, Master: bn}
				if ir.Name == bn && ir.Type == "internal" {
					o.Master = ""
				}
				// A row whose device vswitchd cannot open still says the
				// interface should be there: check network shows that
				// against the kernel's "missing". Its other columns are
				// stale or empty then, so they are not offered.
				if (ir.OFPort != nil && *ir.OFPort == -1) || (ir.Error != nil && *ir.Error != "") {
					out = append(out, o)
					continue
				}
				if ir.MTU != nil {
					o.MTU = *ir.MTU
				}
				if ir.AdminState != nil {
					o.State = *ir.AdminState
				}
				out = append(out, o)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Interface < out[j].Interface })
	return out, nil
}

// Watch calls changed after every change committed to the Bridge, Port,
// Interface or Open_vSwitch rows (whoever made it) until ctx ends, then
// returns nil. It sets up one OVSDB monitor per plugin, shared by all
// watchers; changed runs on libovsdb's event goroutine and should only
// signal (it may run once or twice spuriously right after Watch starts,
// while the monitor's initial rows arrive). A lost connection is
// re-established and the monitor restarted by libovsdb.
func (p *Plugin) Watch(ctx context.Context, changed func()) error {
	if err := p.startMonitor(ctx); err != nil {
		return err
	}
	p.watchMu.Lock()
	id := p.nextW
	p.nextW++
	p.watchers[id] = changed
	p.watchMu.Unlock()
	changed() // what changed before we subscribed was not seen (plugin.Watcher)
	<-ctx.Done()
	p.watchMu.Lock()
	delete(p.watchers, id)
	p.watchMu.Unlock()
	return nil
}

func (p *Plugin) startMonitor(ctx context.Context) error {
	cli, err := p.connect(ctx)
	if err != nil {
		return err
	}
	p.watchMu.Lock()
	defer p.watchMu.Unlock()
	if p.watching {
		return nil
	}
	notify := func() {
		p.watchMu.Lock()
		fs := make([]func(), 0, len(p.watchers))
		for _, f := range p.watchers {
			fs = append(fs, f)
		}
		p.watchMu.Unlock()
		for _, f := range fs {
			f()
		}
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	m := cli.NewMonitor(
		client.WithTable(&rootRow{}),
		client.WithTable(&bridgeRow{}),
		client.WithTable(&portRow{}),
		client.WithTable(&ifaceRow{}),
	)
	if _, err := cli.Monitor(cctx, m); err != nil {
		return fmt.Errorf("monitor ovsdb-server at %s: %w", p.addr, err)
	}
	// Only once the monitor stands: a failed attempt (retried by the
	// daemon) must not leave a handler behind. Rows that arrived before
	// are covered by Watch's first changed().
	cli.Cache().AddEventHandler(&cache.EventHandlerFuncs{
		AddFunc:    func(string, model.Model) { notify() },
		UpdateFunc: func(string, model.Model, model.Model) { notify() },
		DeleteFunc: func(string, model.Model) { notify() },
	})
	p.watching = true
	return nil
}
