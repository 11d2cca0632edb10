package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/search"
)

// indexKeeper keeps the search index of the state directory (if one was
// built) current while serve runs: the plugins the daemon hears about are
// queried again (whole, as `index build` read them) and re-indexed, and new
// audit entries are added. Only changed text is re-embedded. Updates are
// gathered for IndexDebounce, so a burst of signals costs one update.
type indexKeeper struct {
	g    *globals
	eng  *engine.Engine
	logf func(format string, args ...any)

	sel search.Selection // what `index build` was asked to index

	mu    sync.Mutex
	dirty map[string]bool
	kick  chan struct{}
}

// IndexDebounce is how long index updates gather.
var IndexDebounce = 2 * time.Second

func newIndexKeeper(g *globals, eng *engine.Engine, logf func(string, ...any)) *indexKeeper {
	return &indexKeeper{g: g, eng: eng, logf: logf, dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
}

func (k *indexKeeper) mark(name string) {
	k.mu.Lock()
	k.dirty[name] = true
	k.mu.Unlock()
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// Event, SetDrift and Applied make it a daemon.Metrics sink. A drift or a
// correction writes an audit entry; the audit log is re-read at every
// update anyway.
func (k *indexKeeper) Event(source string)                   { k.mark(source) }
func (k *indexKeeper) SetDrift(string, int)                  { k.mark("") }
func (k *indexKeeper) Applied(string, string, time.Duration) { k.mark("") }

// run loads the index and updates it until ctx ends. Without an index it
// says so once and returns.
func (k *indexKeeper) run(ctx context.Context) {
	path := filepath.Join(k.g.searchDir(), search.IndexFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		k.logf("search index: none in %s (build one with `op-dbus index build`); not kept current", k.g.searchDir())
		return
	}
	meta, _, err := search.ReadFile(path)
	if err != nil {
		k.logf("search index: %v; not kept current (rebuild it with `op-dbus index build`)", err)
		return
	}
	k.sel = meta.Selection
	ix, c, err := k.g.loadIndex(ctx)
	if err != nil {
		k.logf("search index: %v; not kept current", err)
		return
	}
	defer c.Close()
	seen := search.AuditSize(k.g.auditDir())
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(IndexDebounce):
		}
		k.mu.Lock()
		dirty := k.dirty
		k.dirty = map[string]bool{}
		k.mu.Unlock()
		seen = k.update(ctx, ix, c, path, dirty, seen)
	}
}

func (k *indexKeeper) update(ctx context.Context, ix *search.Index, c interface{ Save() error }, path string, dirty map[string]bool, seen uint64) uint64 {
	src := search.Sources{Flags: k.g.flagString()}
	if !k.sel.NoPlugins {
		var names []string
		for name := range dirty {
			if _, ok := k.eng.Plugin(name); ok {
				names = append(names, name)
			}
		}
		if len(names) > 0 {
			src.Plugins = search.EngineStates(k.eng, names...)
		}
	}
	next := seen
	if !k.sel.NoAudit {
		// only the entries appended since the last update
		src.Audit = func() ([]ledger.Entry, error) {
			es, n, err := search.ReadAudit(k.g.auditDir(), seen)
			next = n
			return es, err
		}
	}
	if src.Plugins == nil && src.Audit == nil {
		return seen
	}
	got, err := search.Gather(ctx, src)
	if err != nil {
		k.logf("search index: %v", err)
		return seen
	}
	for name, err := range got.PluginErrors {
		k.logf("search index: query %s: %v", name, err)
	}
	added := got.Docs[search.AuditSource]
	delete(got.Docs, search.AuditSource)
	ch, err := ix.Replace(ctx, got.Docs, nil)
	if err != nil {
		k.logf("search index: %v", err)
	}
	if len(added) > 0 {
		ach, err := ix.AddDocuments(ctx, search.AuditSource, added)
		if err != nil {
			k.logf("search index: audit log: %v", err)
		} else {
			ch.Embedded += ach.Embedded
			ch.Added += ach.Added + ach.Changed
		}
	}
	seen = next
	if ch.Added+ch.Changed+ch.Removed == 0 {
		return seen
	}
	if err := ix.SaveFile(path); err != nil {
		k.logf("search index: save %s: %v", path, err)
		return seen
	}
	if err := c.Save(); err != nil {
		k.logf("search index: save the embedding cache: %v", err)
	}
	k.logf("search index: updated (%d re-embedded)", ch.Embedded)
	return seen
}
