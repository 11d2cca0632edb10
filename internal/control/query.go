package control

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/errkind"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/netcheck"
	"github.com/op-dbus/op-dbus/internal/state"
)

type cachedQuery struct {
	once sync.Once // one live query per entry, however many readers wait
	at   time.Time
	r    engine.QueryResult
}

// PluginStatus is one plugin and whether it works here.
type PluginStatus struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// Plugins reports each plugin's availability.
func (s *Service) Plugins(ctx context.Context) []PluginStatus {
	names := s.engine.Names()
	out := make([]PluginStatus, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		p, _ := s.engine.Plugin(n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := PluginStatus{Name: n, Available: true}
			if err := p.Available(ctx); err != nil {
				st.Available, st.Reason = false, err.Error()
			}
			out[i] = st
		}()
	}
	wg.Wait()
	return out
}

// QueryResult is a state document plus the plugins that could not be read:
// Unavailable for those whose service is absent here, Errors for those
// that failed although available.
type QueryResult struct {
	Version     int               `json:"version"`
	Plugins     map[string]any    `json:"plugins"`
	Unavailable map[string]string `json:"unavailable,omitempty"`
	Errors      map[string]string `json:"errors,omitempty"`
	// named is whether the caller asked for plugins by name.
	named bool
	// failures keeps the typed errors behind Unavailable and Errors.
	failures map[string]error
}

// Err is the error a front end reports for this query, nil when there is
// none: a plugin that failed while available, or a plugin asked for by
// name that is unavailable. An unavailable plugin of a whole-host query is
// only noted (the host simply has no NetworkManager, say).
func (r *QueryResult) Err() error {
	for _, n := range slices.Sorted(maps.Keys(r.failures)) {
		err := r.failures[n]
		if r.named || !errkind.Is(err, errkind.Unavailable) {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return nil
}

// Failure is the typed error of one plugin of the result (nil if it was read).
func (r *QueryResult) Failure(plugin string) error { return r.failures[plugin] }

// Query reads the named plugins (all when empty). An unknown name is an
// errkind.UnknownPlugin error; a plugin that cannot be read is reported in
// the result (see QueryResult.Err).
func (s *Service) Query(ctx context.Context, plugins []string) (*QueryResult, error) {
	if err := s.engine.Known(plugins); err != nil {
		return nil, err
	}
	res := s.query(ctx, plugins)
	out := &QueryResult{Version: state.Version, Plugins: map[string]any{}, named: len(plugins) > 0, failures: map[string]error{}}
	for n, r := range res {
		switch {
		case r.Err == nil:
			out.Plugins[n] = r.State
			continue
		case errkind.Is(r.Err, errkind.Unavailable):
			if out.Unavailable == nil {
				out.Unavailable = map[string]string{}
			}
			out.Unavailable[n] = r.Err.Error()
		default:
			if out.Errors == nil {
				out.Errors = map[string]string{}
			}
			out.Errors[n] = r.Err.Error()
		}
		out.failures[n] = r.Err
	}
	return out, nil
}

// Invalidate drops cached query results of the named plugins (all when
// none are named).
func (s *Service) Invalidate(plugins ...string) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if len(plugins) == 0 {
		s.cache = map[string]*cachedQuery{}
		return
	}
	for _, p := range plugins {
		delete(s.cache, p)
	}
}

func (s *Service) query(ctx context.Context, plugins []string) map[string]engine.QueryResult {
	if s.opts.QueryCacheTTL <= 0 {
		return s.engine.Query(ctx, plugins)
	}
	if len(plugins) == 0 {
		plugins = s.engine.Names()
	}
	out := make(map[string]engine.QueryResult, len(plugins))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range plugins {
		s.cacheMu.Lock()
		c := s.cache[n]
		if c != nil && !c.at.IsZero() && time.Since(c.at) > s.opts.QueryCacheTTL {
			c = nil
		}
		if c == nil {
			c = &cachedQuery{}
			s.cache[n] = c
		}
		s.cacheMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.once.Do(func() {
				// Detached from one reader's context: others share it.
				qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dbusx.DefaultTimeout)
				defer cancel()
				c.r = s.engine.Query(qctx, []string{n})[n]
				s.cacheMu.Lock()
				c.at = time.Now()
				s.cacheMu.Unlock()
			})
			mu.Lock()
			out[n] = c.r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Decode strictly decodes a state document (JSON or YAML); every problem
// is an errkind.Invalid error.
func (s *Service) Decode(data []byte) (*state.Document, error) {
	if len(data) > state.MaxSize {
		return nil, errkind.New(errkind.Invalid, fmt.Errorf("state document larger than the %d MiB limit", state.MaxSize>>20))
	}
	doc, err := state.Decode(data, state.FormatAuto, s.engine.Types(), s.engine.Validate)
	return doc, errkind.New(errkind.Invalid, err)
}

// Load reads and strictly decodes a state document file (- is stdin).
func (s *Service) Load(path string) (*state.Document, error) {
	doc, err := s.engine.Load(path)
	return doc, errkind.New(errkind.Invalid, err)
}

// Verify lists every field that differs from doc.
func (s *Service) Verify(ctx context.Context, doc *state.Document) (engine.Verification, error) {
	v := s.engine.Verify(ctx, doc)
	if v.Error != "" {
		return v, fmt.Errorf("%s", v.Error)
	}
	return v, nil
}

// CheckNetwork compares what netlink, NetworkManager, OVSDB and
// /sys/class/net say about every interface (op-dbus check network).
func (s *Service) CheckNetwork(ctx context.Context) (*netcheck.Report, error) {
	return netcheck.Check(ctx, netcheck.Inputs(ctx, s.engine.Plugin))
}

// Introspect walks a bus ("system", "session" or an address).
func (s *Service) Introspect(ctx context.Context, bus string, services []string) (*introspect.Result, error) {
	if bus == "" {
		bus = "system"
	}
	for _, n := range services {
		if !introspect.ValidBusName(n) {
			return nil, errkind.New(errkind.Invalid, fmt.Errorf("%q is not a valid bus name", n))
		}
	}
	// The process's shared connection: in serve, the one its plugins use.
	conn, err := dbusx.Shared(ctx, dbusx.Bus(bus))
	if err != nil {
		return nil, err
	}
	w := &introspect.Walker{Conn: conn, Bus: bus, Services: services}
	return w.Walk(ctx)
}
