package mcpserver

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/search"
	"github.com/op-dbus/op-dbus/internal/search/embed"
)

// SearchInput is a question.
type SearchInput struct {
	Query    string   `json:"query" jsonschema:"what to find, in plain words or a name in any spelling: \"set the time zone\", \"which units failed\", \"NTPSynchronized\""`
	K        int      `json:"k,omitempty" jsonschema:"number of hits (default 10, at most 100)"`
	Kinds    []string `json:"kinds,omitempty" jsonschema:"only these kinds: service, object, interface, method, signal, property, setting, unit, audit, ..."`
	Ranking  string   `json:"ranking,omitempty" jsonschema:"combined (default), lexical or vector"`
	Bus      string   `json:"bus,omitempty" jsonschema:"with services: system (default), session or a D-Bus address"`
	Services []string `json:"services,omitempty" jsonschema:"also search these D-Bus services' objects, interfaces, methods, signals and properties (e.g. org.freedesktop.timedate1)"`
}

// SearchOutput is the ranked hits.
type SearchOutput struct {
	Results   []search.Result `json:"results"`
	Documents int             `json:"documents" jsonschema:"documents searched"`
}

// searcher keeps one live index per server: plugin states and the audit
// log always, D-Bus services once asked for. Re-reading is cheap: only
// documents whose text changed are embedded again.
type searcher struct {
	s  *Server
	mu sync.Mutex
	ix *search.Index
	// seeded: the D-Bus documents of the state directory's index (built by
	// `op-dbus index build`) were added; plugin states and the audit log
	// are always read live instead.
	seeded bool
}

// seed returns the D-Bus sources of the state directory's search index, if
// there is one made with the built-in embedder of this index's dimension.
func (sr *searcher) seed() map[string][]search.Document {
	if sr.s.svc.StateDir() == "" {
		return nil
	}
	m, docs, err := search.ReadFile(filepath.Join(sr.s.svc.Dir().Search(), search.IndexFile))
	if err != nil || m.Config.Kind != "builtin" || (m.Config.Dim != 0 && m.Config.Dim != sr.ix.Embedder().Dim()) {
		return nil
	}
	out := map[string][]search.Document{}
	for _, d := range docs {
		if _, ok := search.BusOfSource(d.Source); !ok {
			continue // plugin states and the audit log are read live
		}
		out[d.Source] = append(out[d.Source], d)
	}
	return out
}

func (s *Server) addSearchTool() {
	sr := &searcher{s: s, ix: search.New(embed.NewBuiltin(0), nil, nil)}
	addTool(s.mcp, &mcp.Tool{
		Name:  "search",
		Title: "Search the host by meaning",
		Description: "Find D-Bus services, objects, interfaces, methods, signals and properties (with values), plugin state items " +
			"(units, settings, peers, bridges) and audit log entries by a question. Each hit has a stable id and `open`, " +
			"the op-dbus command that shows its source. Plugin states and the audit log are read live; D-Bus services are " +
			"searched when named in services, and so are those of the state directory's index (op-dbus index build). Secret values are never indexed.",
		Annotations: readOnly(),
	}, sr.search)
}

func (sr *searcher) search(ctx context.Context, _ *mcp.CallToolRequest, in SearchInput) (*mcp.CallToolResult, *SearchOutput, error) {
	if err := search.CheckQuery(in.Query); err != nil {
		return nil, nil, err
	}
	switch {
	case in.K < 0:
		return nil, nil, errors.New("k: negative")
	case in.K == 0:
		in.K = 10
	case in.K > 100:
		in.K = 100
	}
	sr.mu.Lock()
	defer sr.mu.Unlock()
	sources := map[string][]search.Document{}
	if !sr.seeded {
		sr.seeded = true
		for src, docs := range sr.seed() {
			sources[src] = docs
		}
	}
	svc := sr.s.svc
	src := search.Sources{
		Plugins: func(ctx context.Context) (map[string]any, map[string]error, error) {
			r, err := svc.Query(ctx, nil)
			if err != nil {
				return nil, nil, err
			}
			return r.Plugins, nil, nil
		},
		Audit: func() ([]ledger.Entry, error) {
			es, err := svc.AuditLog(time.Time{}, "")
			if err != nil {
				return nil, nil // searched without the audit log
			}
			return es, nil
		},
	}
	if len(in.Services) > 0 {
		bus := in.Bus
		if bus == "" {
			bus = "system"
		}
		src.Buses = []search.Bus{{Name: bus, Services: in.Services,
			Walk: func(ctx context.Context, b search.Bus) (*introspect.Result, error) {
				return svc.Introspect(ctx, b.Name, b.Services)
			}}}
	}
	got, err := search.Gather(ctx, src)
	if err != nil {
		return nil, nil, err
	}
	for s, docs := range got.Docs {
		sources[s] = docs
	}
	if _, err := sr.ix.Replace(ctx, sources, nil); err != nil {
		return nil, nil, err
	}
	rs, err := sr.ix.Search(ctx, search.Query{Text: in.Query, K: in.K, Kinds: in.Kinds, Ranking: search.Ranking(in.Ranking)})
	if err != nil {
		return nil, nil, err
	}
	if rs == nil {
		rs = []search.Result{}
	}
	return nil, &SearchOutput{Results: rs, Documents: sr.ix.Len()}, nil
}
