package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/introspect"
	"github.com/op-dbus/op-dbus/internal/search"
	"github.com/op-dbus/op-dbus/internal/search/cache"
	"github.com/op-dbus/op-dbus/internal/search/embed"
	"github.com/op-dbus/op-dbus/internal/statedir"
)

// EmbedAPIKeyEnv holds the API key of an external embedder; it is never
// written to the index.
const EmbedAPIKeyEnv = "OPDBUS_EMBED_API_KEY"

func (g *globals) searchDir() string { return statedir.New(g.stateDir).Search() }

type embedFlags struct {
	embedder string
	model    string
	dim      int
	timeout  time.Duration
	maxCache int64
}

func (f *embedFlags) config() search.EmbedderConfig {
	if f.embedder == "" || f.embedder == "builtin" {
		return search.EmbedderConfig{Kind: "builtin", Dim: f.dim}
	}
	return search.EmbedderConfig{Kind: "openai", URL: f.embedder, Model: f.model, Dim: f.dim}
}

func makeEmbedder(c search.EmbedderConfig, timeout time.Duration) (embed.Embedder, error) {
	switch c.Kind {
	case "", "builtin":
		return embed.NewBuiltin(c.Dim), nil
	case "openai":
		if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
			return nil, fmt.Errorf("--embedder %q: give builtin or the base URL of an OpenAI-compatible endpoint (http://127.0.0.1:11434)", c.URL)
		}
		if c.Model == "" {
			return nil, errors.New("--embedder URL needs --embed-model (e.g. nomic-embed-text)")
		}
		h := embed.NewHTTP(c.URL, c.Model, c.Dim)
		h.APIKey = os.Getenv(EmbedAPIKeyEnv)
		h.Timeout = timeout
		return h, nil
	}
	return nil, fmt.Errorf("unknown embedder kind %q in the index (rebuild it with `op-dbus index build`)", c.Kind)
}

// openIndex makes the index's embedder and cache; the embedder's dimension
// is learned first when it was not configured.
func (g *globals) openIndex(ctx context.Context, cfg search.EmbedderConfig, timeout time.Duration, maxCache int64) (*search.Index, *cache.Cache, error) {
	emb, err := makeEmbedder(cfg, timeout)
	if err != nil {
		return nil, nil, err
	}
	if emb.Dim() == 0 {
		if _, err := emb.Embed(ctx, []string{"op-dbus"}); err != nil {
			return nil, nil, fmt.Errorf("asking the embedder for its dimension: %w", err)
		}
	}
	c, err := cache.Open(filepath.Join(g.searchDir(), search.VectorFile), emb.Dim(), emb.ID(), maxCache)
	if err != nil {
		return nil, nil, err
	}
	if c.Rebuilt != "" {
		fmt.Fprintf(g.stderr, "op-dbus: embedding cache %s not used (%s): it is rebuilt\n", filepath.Join(g.searchDir(), search.VectorFile), c.Rebuilt)
	}
	ix := search.New(emb, c, nil)
	return ix, c, nil
}

func newIndexCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "index build|update|stats",
		Short: "Build and maintain the search index (see `op-dbus search`)",
		Long: `The search index holds one document for every D-Bus service, object,
interface, method, signal and property (with its value) of the selected buses,
every plugin state item (a unit, a setting, a peer, a bridge) and every audit
log entry, each with a stable ID and the command that opens it. It lives in
STATE-DIR/search: index.bin (documents) and vectors.bin (embeddings by content
hash, mapped into memory, bounded by --cache-max-bytes).

Buses: --bus is repeatable (--bus system --bus session). Without it, build
indexes the system bus and also the session bus when one answers within
` + OptionalBusTimeout.String() + ` (with --user: the session bus, and the system bus when it answers); stderr
says which buses were indexed and which were skipped, and why. IDs start
with dbus/BUS/, so the two buses' documents never collide.

  op-dbus index build     walk, read and embed everything anew
  op-dbus index update    the same selection (the same buses) again; only
                          documents whose text changed are embedded again; a
                          default bus that does not answer keeps its documents
  op-dbus index stats     what the index holds, per kind, bus and source

Values of properties and state fields whose names look secret (key, token,
password, secret, psk, ...) are never indexed, and no file is read: WireGuard
key files included. See docs/search.md.`,
	}
	c.AddCommand(newIndexBuildCmd(g, false), newIndexBuildCmd(g, true), newIndexStatsCmd(g))
	return c
}

func newIndexBuildCmd(g *globals, update bool) *cobra.Command {
	var sel search.Selection
	var ef embedFlags
	var callTimeout time.Duration
	use, short := "build [--bus system|session|ADDRESS]... [--service NAME]...", "Index the buses, the plugin states and the audit log"
	if update {
		use, short = "update", "Index again what the last build selected; embed only what changed"
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		Example: `  op-dbus index build                                   # system bus (+ session bus if reachable), plugins, audit log
  op-dbus index build --bus system --bus session        # both buses; either missing is an error
  op-dbus index build --bus session --service org.freedesktop.systemd1
  op-dbus index build --embedder http://127.0.0.1:11434 --embed-model nomic-embed-text
  op-dbus index update -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			ctx, cancel := g.context()
			defer cancel()
			start := time.Now()
			path := filepath.Join(g.searchDir(), search.IndexFile)
			var old *search.Meta
			var oldDocs []search.Document
			cfg := ef.config()
			if update {
				m, docs, err := search.ReadFile(path)
				switch {
				case err == nil:
					old, oldDocs = &m, docs
					sel, cfg = m.Selection, m.Config
				case errors.Is(err, search.ErrNoIndex):
					fmt.Fprintf(g.stderr, "op-dbus: no search index yet: building one\n")
				default:
					fmt.Fprintf(g.stderr, "op-dbus: %v: rebuilding the index\n", err)
				}
				if old == nil {
					sel = search.Selection{DefaultBuses: true}
				}
			} else {
				for _, s := range sel.Services {
					if !introspect.ValidBusName(s) {
						return &exitError{ExitError, fmt.Errorf("--service %q is not a valid bus name (like org.freedesktop.hostname1)", s)}
					}
				}
				if sel.NoBus && len(sel.Buses) > 0 {
					return &exitError{ExitError, errors.New("--bus and --no-bus: give one of them")}
				}
				var buses []string
				for _, b := range sel.Buses {
					if b != string(dbusx.System) && b != string(dbusx.Session) && !strings.Contains(b, ":") {
						return &exitError{ExitError, fmt.Errorf("--bus %q: give system, session or a D-Bus address (unix:path=/run/dbus/system_bus_socket)", b)}
					}
					if !slices.Contains(buses, b) {
						buses = append(buses, b)
					}
				}
				sel.Buses = buses
				sel.DefaultBuses = len(buses) == 0 && !sel.NoBus
			}
			sel.User = g.user
			ix, c, err := g.openIndex(ctx, cfg, ef.timeout, ef.maxCache)
			if err != nil {
				return &exitError{ExitError, err}
			}
			defer c.Close()
			if old != nil {
				if _, err := search.Load(ctx, *old, oldDocs, ix); err != nil {
					return &exitError{ExitError, err}
				}
			}
			src := search.Sources{Buses: g.searchBuses(sel, callTimeout), Flags: g.flagString(),
				Log: g.logger().Printf}
			if !sel.NoPlugins {
				e, done := g.engine()
				defer done()
				src.Plugins = search.EngineStates(e)
			}
			if !sel.NoAudit {
				src.Audit = search.AuditLogAt(g.auditDir())
			}
			got, err := search.Gather(ctx, src)
			if err != nil {
				return &exitError{ExitError, err}
			}
			sources := got.Docs
			skipped := map[string]bool{}
			sel.Buses = nil
			for _, b := range got.Buses {
				if b.Skipped != "" {
					skipped[b.Bus] = true
					continue
				}
				sel.Buses = append(sel.Buses, b.Bus)
			}
			kept := map[string]int{}
			for _, s := range ix.Sources() {
				if _, ok := sources[s]; ok {
					continue
				}
				if bus, ok := search.BusOfSource(s); ok && skipped[bus] {
					kept[bus]++ // not reachable now: keep what the last build read
					continue
				}
				sources[s] = nil // gone since the last build
			}
			if len(sel.Buses) > 0 {
				sel.Bus = sel.Buses[0] // what an older op-dbus reads
			}
			reportBuses(g.stderr, got.Buses, kept)
			total := 0
			for _, d := range sources {
				total += len(d)
			}
			fmt.Fprintf(g.stderr, "op-dbus: %d documents read; embedding what changed...\n", total)
			last := time.Now()
			ch, err := ix.Replace(ctx, sources, func(done, n int) {
				if time.Since(last) > time.Second || done == n {
					last = time.Now()
					fmt.Fprintf(g.stderr, "op-dbus: embedded %d of %d\n", done, n)
				}
			})
			if err != nil {
				return &exitError{ExitError, err}
			}
			now := time.Now().UTC()
			meta := search.Meta{Version: search.FormatVersion, Built: now, Updated: now, Embedder: ix.Embedder().ID(), Config: cfg, Selection: sel}
			if old != nil {
				meta.Built = old.Built
			}
			ix.Meta = meta
			if err := ix.SaveFile(path); err != nil {
				return &exitError{ExitError, err}
			}
			if err := c.Save(); err != nil {
				return &exitError{ExitError, err}
			}
			buses := got.Buses
			if buses == nil {
				buses = []search.BusReport{}
			}
			out := struct {
				Documents  int                `json:"documents"`
				Change     search.Change      `json:"change"`
				Buses      []search.BusReport `json:"buses"`
				DurationMS int64              `json:"duration_ms"`
				Index      string             `json:"index"`
			}{ix.Len(), ch, buses, time.Since(start).Milliseconds(), path}
			if f != "text" {
				return writeData(g.stdout, f, out)
			}
			fmt.Fprintf(g.stdout, "%d documents in %s: %d added, %d changed, %d removed, %d unchanged; %d embedded, %d from the cache (%.1fs)\n",
				out.Documents, path, ch.Added, ch.Changed, ch.Removed, ch.Same, ch.Embedded, ch.Cached, time.Since(start).Seconds())
			return nil
		},
	}
	fl := c.Flags()
	if !update {
		fl.StringArrayVar(&sel.Buses, "bus", nil, "system, session or a D-Bus address (repeatable; default the system bus plus the session bus when one answers within "+
			OptionalBusTimeout.String()+"; with --user the session bus plus the system bus)")
		fl.StringSliceVar(&sel.Services, "service", nil, "index only this service (repeatable; of every --bus, or without --bus of the system bus alone, the session bus with --user; default every service)")
		fl.BoolVar(&sel.Activatable, "activatable", false, "also walk activatable services that are not running (this starts them)")
		fl.BoolVar(&sel.NoBus, "no-bus", false, "do not index any bus")
		fl.BoolVar(&sel.NoPlugins, "no-plugins", false, "do not index the plugin states")
		fl.BoolVar(&sel.NoAudit, "no-audit", false, "do not index the audit log")
		fl.StringVar(&ef.embedder, "embedder", "builtin", "builtin, or the base URL of an OpenAI-compatible /v1/embeddings endpoint (API key from $"+EmbedAPIKeyEnv+")")
		fl.StringVar(&ef.model, "embed-model", "", "model name for --embedder URL")
		fl.IntVar(&ef.dim, "embed-dim", 0, "vector dimension (builtin: default 256; URL: learned from the endpoint)")
	}
	fl.DurationVar(&ef.timeout, "embed-timeout", 30*time.Second, "give up on one embedder request after this long (retried twice)")
	fl.Int64Var(&ef.maxCache, "cache-max-bytes", cache.DefaultMaxBytes, "bound of the embedding cache file; least recently used vectors are evicted")
	fl.DurationVar(&callTimeout, "call-timeout", 5*time.Second, "give up on one D-Bus call after this long")
	return c
}

// OptionalBusTimeout bounds connecting to a bus that is indexed only when
// it is there (the session bus of a default `index build`).
var OptionalBusTimeout = 2 * time.Second

// searchBuses is the buses a selection walks. Named buses must all be
// reachable. By default the system bus must be (the session bus with
// --user) and the other is walked when it answers within
// OptionalBusTimeout; --service without --bus names services of the
// first one only.
func (g *globals) searchBuses(sel search.Selection, callTimeout time.Duration) []search.Bus {
	if sel.NoBus {
		return nil
	}
	if !sel.DefaultBuses {
		var out []search.Bus
		for _, b := range sel.BusList() {
			out = append(out, search.Bus{Name: b, Services: sel.Services, Activatable: sel.Activatable, CallTimeout: callTimeout})
		}
		return out
	}
	first, second := string(dbusx.System), string(dbusx.Session)
	if g.user {
		first, second = second, first
	}
	out := []search.Bus{{Name: first, Services: sel.Services, Activatable: sel.Activatable, CallTimeout: callTimeout}}
	if len(sel.Services) == 0 {
		out = append(out, search.Bus{Name: second, Activatable: sel.Activatable, CallTimeout: callTimeout,
			Optional: true, ConnectTimeout: OptionalBusTimeout})
	}
	return out
}

// reportBuses says on stderr which buses were indexed and which were
// skipped, and why; kept counts the sources of a skipped bus that the
// last build read and that stay in the index.
func reportBuses(w io.Writer, rs []search.BusReport, kept map[string]int) {
	for _, r := range rs {
		if r.Skipped == "" {
			fmt.Fprintf(w, "op-dbus: indexed the %s: %d services, %d documents\n", dbusx.Bus(r.Bus), r.Services, r.Documents)
			continue
		}
		msg := fmt.Sprintf("op-dbus: skipped the %s: %s", dbusx.Bus(r.Bus), r.Skipped)
		if n := kept[r.Bus]; n > 0 {
			msg += fmt.Sprintf(" (the %d services indexed before are kept)", n)
		}
		fmt.Fprintln(w, msg)
	}
}

// flagString is the global flags a pointer command needs to open the same
// thing again.
func (g *globals) flagString() string {
	var f []string
	if g.stateDir != "/var/lib/op-dbus" {
		f = append(f, "--state-dir="+g.stateDir)
	}
	if g.user {
		f = append(f, "--user")
	}
	return strings.Join(f, " ")
}

func newIndexStatsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "What the search index holds: documents per kind, bus and source",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			ctx, cancel := g.context()
			defer cancel()
			ix, c, err := g.loadIndex(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			st := ix.Stats()
			for _, b := range ix.Meta.Selection.BusList() {
				st.Buses[b] += 0 // a bus selected that holds nothing shows 0
			}
			out := struct {
				search.Stats
				Selection search.Selection `json:"selection"`
			}{st, ix.Meta.Selection}
			if f != "text" {
				return writeData(g.stdout, f, out)
			}
			fmt.Fprintf(g.stdout, "%d documents, %d vectors of %d dimensions (%s)\n", st.Documents, st.Vectors, st.Dim, st.Embedder)
			fmt.Fprintf(g.stdout, "built %s, updated %s\n", st.Built.Local().Format(time.RFC3339), st.Updated.Local().Format(time.RFC3339))
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tDOCUMENTS")
			for _, k := range slices.Sorted(maps.Keys(st.Kinds)) {
				fmt.Fprintf(tw, "%s\t%d\n", k, st.Kinds[k])
			}
			fmt.Fprintln(tw, "BUS\tDOCUMENTS")
			for _, k := range slices.Sorted(maps.Keys(st.Buses)) {
				fmt.Fprintf(tw, "%s\t%d\n", k, st.Buses[k])
			}
			fmt.Fprintln(tw, "SOURCE\tDOCUMENTS")
			for _, k := range slices.Sorted(maps.Keys(st.Sources)) {
				fmt.Fprintf(tw, "%s\t%d\n", k, st.Sources[k])
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if st.Cache != nil {
				fmt.Fprintf(g.stdout, "cache: %d vectors, %d of at most %d bytes\n", st.Cache.Entries, st.Cache.Bytes, st.Cache.MaxBytes)
			}
			return nil
		},
	}
}

// loadIndex reads the index of the state directory with its vectors.
func (g *globals) loadIndex(ctx context.Context) (*search.Index, *cache.Cache, error) {
	path := filepath.Join(g.searchDir(), search.IndexFile)
	m, docs, err := search.ReadFile(path)
	switch {
	case errors.Is(err, search.ErrNoIndex):
		return nil, nil, &exitError{ExitError, fmt.Errorf("no search index in %s yet: build one with `op-dbus index build`", g.searchDir())}
	case errors.Is(err, search.ErrOldFormat), errors.Is(err, search.ErrCorrupt):
		return nil, nil, &exitError{ExitError, fmt.Errorf("%w: rebuild it with `op-dbus index update` (or `index build`)", err)}
	case err != nil:
		return nil, nil, &exitError{ExitError, err}
	}
	ix, c, err := g.openIndex(ctx, m.Config, 30*time.Second, 0)
	if err != nil {
		return nil, nil, &exitError{ExitError, err}
	}
	ch, err := search.Load(ctx, m, docs, ix)
	if err != nil {
		c.Close()
		return nil, nil, &exitError{ExitError, err}
	}
	if ch.Embedded > 0 {
		// vectors evicted from the cache were made again: keep them
		fmt.Fprintf(g.stderr, "op-dbus: %d vectors were not in the cache and were embedded again\n", ch.Embedded)
		_ = c.Save()
	}
	return ix, c, nil
}

func newSearchCmd(g *globals) *cobra.Command {
	var k int
	var kinds []string
	var ranking string
	c := &cobra.Command{
		Use:   "search QUESTION|- [-k 10] [--kind KIND]...",
		Short: "Find anything on the host by meaning: methods, properties, units, audit entries",
		Long: `Search the index built by ` + "`op-dbus index build`" + ` with a question in plain words or
a name in any of its spellings ("set the time zone", "SetTimezone",
"default.target", "default_2etarget").

Each hit shows its rank, score, kind, stable ID, a snippet, and the command
that opens its source (op-dbus introspect ..., op-dbus query -p ...,
op-dbus audit show N). The same member on many objects (Stop on every unit)
is shown once, with the number of others.

Ranking combines BM25 over D-Bus-aware words (CamelCase, dots, underscores,
systemd's _2e escapes, hyphens) with vector similarity from the index's
embedder; --ranking lexical or vector uses one alone. The built-in embedder
knows word pieces and a small D-Bus/systemd synonym table, not meaning in
general: see docs/search.md.

Kinds: service, object, interface, method, signal, property, setting, unit,
audit, and the items of other plugins (peer, bridge, connection, netif, ...).

A question of "-" is read from stdin (at most 4096 bytes).

Exit codes: 0 with or without hits, 1 on an error (no index, a bad query).`,
		Example: `  op-dbus search "set the time zone"
  op-dbus search "which units failed" --kind unit
  op-dbus search "who changed the hostname" --kind audit -o json
  op-dbus search -k 3 NTPSynchronized`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := g.format("text")
			if err != nil {
				return err
			}
			q := strings.Join(args, " ")
			if q == "-" {
				// the question on stdin (bounded: a longer one is refused)
				b, err := io.ReadAll(io.LimitReader(g.stdin, search.MaxQueryBytes+1))
				if err != nil {
					return &exitError{ExitError, fmt.Errorf("reading the question from stdin: %w", err)}
				}
				q = strings.TrimSpace(string(b))
			}
			if err := search.CheckQuery(q); err != nil {
				return &exitError{ExitError, err}
			}
			if k <= 0 || k > 1000 {
				return &exitError{ExitError, fmt.Errorf("-k %d: give 1 to 1000", k)}
			}
			ctx, cancel := g.context()
			defer cancel()
			ix, c, err := g.loadIndex(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			rs, err := ix.Search(ctx, search.Query{Text: q, K: k, Kinds: kinds, Ranking: search.Ranking(ranking)})
			if err != nil {
				return &exitError{ExitError, err}
			}
			if f != "text" {
				return writeList(g, f, rs)
			}
			pal := g.colors()
			if len(rs) == 0 {
				fmt.Fprintln(g.stdout, "No hits.")
				return nil
			}
			for _, r := range rs {
				fmt.Fprintf(g.stdout, "%2d. %s %s %s\n", r.Rank, pal.dim(fmt.Sprintf("%.3f", r.Score)), pal.yellow(r.Doc.Kind), pal.bold(r.Doc.ID))
				if r.Snippet != "" {
					fmt.Fprintf(g.stdout, "    %s\n", r.Snippet)
				}
				if r.Others > 0 {
					fmt.Fprintf(g.stdout, "    %s\n", pal.dim(fmt.Sprintf("(and on %d other objects)", r.Others)))
				}
				fmt.Fprintf(g.stdout, "    %s %s\n", pal.dim("open:"), r.Doc.Open)
			}
			return nil
		},
	}
	c.Flags().IntVarP(&k, "k", "k", 10, "number of hits")
	c.Flags().StringSliceVar(&kinds, "kind", nil, "only hits of this kind (repeatable): method, property, unit, audit, ...")
	c.Flags().StringVar(&ranking, "ranking", "combined", "combined, lexical or vector")
	return c
}
