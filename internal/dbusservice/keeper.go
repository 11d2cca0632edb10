package dbusservice

import (
	"context"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/op-dbus/op-dbus/internal/control"
)

// Keeper keeps org.opdbus1 on a bus for the life of a daemon: it takes a
// connection from dial (serve passes dbusx.Shared, the process's one
// connection to that bus), starts a Server on it, and when the connection
// drops (the bus restarted) it dials again with back-off, carrying the
// drift counts over. It never closes a connection: when it stops it
// releases the name and unexports the object. Its
// StateChanged, SetDrift and Applied go to the current Server, and are
// dropped while there is none.
type Keeper struct {
	dial func(context.Context) (*dbus.Conn, error)
	svc  *control.Service
	opts Options

	mu    sync.Mutex
	cur   *Server
	drift map[string]int
	ready chan struct{} // closed when the first Server is up
	done  chan struct{} // closed when the keeper has stopped (name released)
	once  sync.Once
}

// Backoff bounds the pause between reconnect attempts.
var Backoff = struct{ Min, Max time.Duration }{100 * time.Millisecond, 5 * time.Second}

// Keep starts keeping the service on the bus dial connects to, until ctx
// ends. Failures are logged through opts.Log and retried.
func Keep(ctx context.Context, dial func(context.Context) (*dbus.Conn, error), svc *control.Service, opts Options) *Keeper {
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	k := &Keeper{dial: dial, svc: svc, opts: opts, drift: map[string]int{}, ready: make(chan struct{}), done: make(chan struct{})}
	go k.run(ctx)
	return k
}

// Ready is closed once the service has been on the bus for the first time.
func (k *Keeper) Ready() <-chan struct{} { return k.ready }

// Done is closed once the keeper has stopped after its context ended,
// with the name released and the object unexported.
func (k *Keeper) Done() <-chan struct{} { return k.done }

func (k *Keeper) run(ctx context.Context) {
	defer close(k.done)
	wait := Backoff.Min
	logged := false
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := k.dial(dctx)
		cancel()
		var srv *Server
		if err == nil {
			srv, err = Start(conn, k.svc, k.opts)
		}
		if err != nil {
			if !logged {
				k.opts.Log("D-Bus service %s not on the bus: %v; retrying", BusName, err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(wait*2, Backoff.Max)
			continue
		}
		k.mu.Lock()
		for p, n := range k.drift {
			srv.SetDrift(p, n)
		}
		k.cur = srv
		k.mu.Unlock()
		k.once.Do(func() { close(k.ready) })
		if logged {
			k.opts.Log("D-Bus service %s back on the bus", BusName)
		}
		logged, wait = false, Backoff.Min
		select {
		case <-ctx.Done():
			k.mu.Lock()
			k.cur = nil
			k.mu.Unlock()
			if err := srv.Close(); err != nil {
				k.opts.Log("D-Bus service %s: release the name: %v", BusName, err)
			}
			return
		case <-conn.Context().Done():
			k.opts.Log("D-Bus service %s: connection to the bus lost; reconnecting", BusName)
		}
		k.mu.Lock()
		k.cur = nil
		k.mu.Unlock()
	}
}

func (k *Keeper) server() *Server {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// StateChanged forwards to the current server.
func (k *Keeper) StateChanged(plugin string) {
	if s := k.server(); s != nil {
		s.StateChanged(plugin)
	}
}

// SetDrift records the count (kept across reconnects) and forwards it.
func (k *Keeper) SetDrift(plugin string, n int) {
	k.mu.Lock()
	k.drift[plugin] = n
	s := k.cur
	k.mu.Unlock()
	if s != nil {
		s.SetDrift(plugin, n)
	}
}

// Applied forwards to the current server.
func (k *Keeper) Applied(planHash string, success bool, source string) {
	if s := k.server(); s != nil {
		s.Applied(planHash, success, source)
	}
}
