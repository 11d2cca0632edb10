package search

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/search/cache"
	"github.com/op-dbus/op-dbus/internal/search/embed"
	"github.com/op-dbus/op-dbus/internal/search/store"
	"github.com/op-dbus/op-dbus/internal/search/token"
)

// MaxQueryBytes bounds a query. Longer text is not a question.
const MaxQueryBytes = 4096

// Errors a query is refused with.
var (
	ErrEmptyQuery = errors.New("empty query: say what to look for, e.g. \"set the time zone\"")
	ErrQueryUTF8  = errors.New("query is not valid UTF-8")
	ErrQueryLong  = fmt.Errorf("query is longer than %d bytes: ask a question, not a document", MaxQueryBytes)
)

// Ranking selects how results are scored.
type Ranking string

// Rankings.
const (
	Combined Ranking = "combined"
	Lexical  Ranking = "lexical"
	Vector   Ranking = "vector"
)

// Ranking parameters. They were tuned on the even-numbered labelled
// queries of testdata/queries.yaml and checked on the odd-numbered ones
// (docs/benchmarks.md, issue 8); tests may change them.
var tune = params{
	LexicalWeight:  0.5,
	RRFK:           60,
	SynonymWeight:  1,
	ContextWeight:  1,
	MethodBoost:    0.5,
	ReplicaPenalty: 0.35,
}

type params struct {
	// LexicalWeight is the share of the lexical score in a weighted-sum
	// combination (the vector similarity has the rest), both scaled to
	// [0, 1] over the candidates first.
	LexicalWeight float32
	// RRFK > 0 combines by reciprocal rank fusion instead:
	// 1/(RRFK+lexical rank) + 1/(RRFK+vector rank).
	RRFK float32
	// SynonymWeight is a synonym's weight relative to the query term it
	// expands.
	SynonymWeight float32
	// ContextWeight is the BM25 term frequency of a word of a document's
	// context (service, object path, interface); a word of its name counts
	// nameWeight, of its text 1.
	ContextWeight float32
	// MethodBoost raises methods by this share for a query that starts
	// with an imperative verb ("stop a service"): it asks for an action.
	MethodBoost float32
	// ReplicaPenalty lowers by this share a member that many objects
	// share (Stop on every unit, Ping on every item) unless the query
	// names the object: a question that names no object is about the
	// API, which the member on one object (the Manager's StopUnit)
	// answers.
	ReplicaPenalty float32
}

// candidates each ranking contributes to the combined one.
const candidates = 200

// Index is the searchable set of documents with their vectors. Safe for
// concurrent use.
type Index struct {
	Meta Meta

	mu     sync.RWMutex
	docs   []Document
	byID   map[string]int
	hashes map[string]uint64 // ID → content hash of its vector
	lex    *lexical
	dirty  bool
	emb    embed.Embedder
	cache  *cache.Cache
	vecs   store.VectorStore
}

// Change counts what an update did.
type Change struct {
	Added    int `json:"added"`
	Changed  int `json:"changed"`
	Removed  int `json:"removed"`
	Same     int `json:"unchanged"`
	Embedded int `json:"embedded"`
	Cached   int `json:"from_cache"`
}

func (c *Change) add(o Change) {
	c.Added += o.Added
	c.Changed += o.Changed
	c.Removed += o.Removed
	c.Same += o.Same
	c.Embedded += o.Embedded
	c.Cached += o.Cached
}

// New returns an empty index over emb, with vectors cached in c (may be
// nil: no cache) and kept in vs (nil: an exact in-memory store).
func New(emb embed.Embedder, c *cache.Cache, vs store.VectorStore) *Index {
	if vs == nil && emb.Dim() > 0 {
		vs = store.NewExact(emb.Dim())
	}
	return &Index{Meta: Meta{Version: FormatVersion, Embedder: emb.ID()}, byID: map[string]int{}, hashes: map[string]uint64{},
		emb: emb, cache: c, vecs: vs}
}

// Len is the number of documents.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.docs)
}

// Documents returns a copy of the documents.
func (ix *Index) Documents() []Document {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return append([]Document(nil), ix.docs...)
}

// Get returns a document by ID.
func (ix *Index) Get(id string) (Document, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	i, ok := ix.byID[id]
	if !ok {
		return Document{}, false
	}
	return ix.docs[i], true
}

// Embedder returns the index's embedder.
func (ix *Index) Embedder() embed.Embedder { return ix.emb }

// Progress, when set, is told how many texts were embedded of how many.
type Progress func(done, total int)

// ReplaceSource makes docs the documents of source (see Document.Source):
// documents of source that are not in docs are removed. Only documents
// whose content hash has no vector yet (in the index or the cache) are
// embedded.
func (ix *Index) ReplaceSource(ctx context.Context, source string, docs []Document, progress Progress) (Change, error) {
	return ix.Replace(ctx, map[string][]Document{source: docs}, progress)
}

// Replace is ReplaceSource for several sources at once (one embedding
// pass, batched).
func (ix *Index) Replace(ctx context.Context, bySource map[string][]Document, progress Progress) (Change, error) {
	var ch Change
	// Vectors first, outside the lock: embedding may be slow.
	type need struct {
		id   string
		hash uint64
		text string
	}
	var needs []need
	newVec := map[string][]float32{}
	ix.mu.RLock()
	for src, docs := range bySource {
		for i := range docs {
			d := &docs[i]
			if d.Source != src {
				ix.mu.RUnlock()
				return ch, fmt.Errorf("document %s has source %q, not %q", d.ID, d.Source, src)
			}
			h := d.Hash()
			if old, ok := ix.hashes[d.ID]; ok && old == h && ix.vecs != nil {
				if ix.vecs.Has(d.ID) {
					continue
				}
			}
			if ix.cache != nil {
				if v, ok := ix.cache.Get(h); ok {
					newVec[d.ID] = v
					ch.Cached++
					continue
				}
			}
			needs = append(needs, need{d.ID, h, d.EmbedText()})
		}
	}
	ix.mu.RUnlock()
	const batch = 512
	for i := 0; i < len(needs); i += batch {
		j := min(i+batch, len(needs))
		texts := make([]string, 0, j-i)
		for _, n := range needs[i:j] {
			texts = append(texts, n.text)
		}
		vs, err := ix.emb.Embed(ctx, texts)
		if err != nil {
			return ch, fmt.Errorf("embedding documents: %w", err)
		}
		if len(vs) != len(texts) {
			return ch, fmt.Errorf("embedder returned %d vectors for %d texts", len(vs), len(texts))
		}
		for k, v := range vs {
			if ix.vecs == nil {
				ix.vecs = store.NewExact(len(v))
			}
			if len(v) != ix.vecs.Dim() {
				return ch, fmt.Errorf("embedder returned a vector of dimension %d, the index holds %d: %w", len(v), ix.vecs.Dim(), embed.ErrDimension)
			}
			n := needs[i+k]
			newVec[n.id] = v
			if ix.cache != nil {
				if err := ix.cache.Put(n.hash, v); err != nil {
					return ch, err
				}
			}
		}
		ch.Embedded += len(vs)
		if progress != nil {
			progress(j, len(needs))
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for src, docs := range bySource {
		keep := make(map[string]bool, len(docs))
		for i := range docs {
			d := docs[i]
			keep[d.ID] = true
			h := d.Hash()
			if at, ok := ix.byID[d.ID]; ok {
				if ix.hashes[d.ID] == h && ix.docs[at] == d {
					ch.Same++
				} else {
					ch.Changed++
					ix.docs[at] = d
					ix.dirty = true
				}
			} else {
				ch.Added++
				ix.byID[d.ID] = len(ix.docs)
				ix.docs = append(ix.docs, d)
				ix.dirty = true
			}
			ix.hashes[d.ID] = h
			if v, ok := newVec[d.ID]; ok {
				if err := ix.vecs.Upsert(d.ID, v); err != nil {
					return ch, err
				}
			}
		}
		// remove what the source no longer has
		out := ix.docs[:0]
		removed := false
		for _, d := range ix.docs {
			if d.Source == src && !keep[d.ID] {
				ch.Removed++
				delete(ix.hashes, d.ID)
				ix.vecs.Delete(d.ID)
				removed = true
				continue
			}
			out = append(out, d)
		}
		if removed {
			ix.docs = out
			ix.reindexIDs()
			ix.dirty = true
		}
	}
	return ch, nil
}

func (ix *Index) reindexIDs() {
	ix.byID = make(map[string]int, len(ix.docs))
	for i, d := range ix.docs {
		ix.byID[d.ID] = i
	}
}

// Sources lists the sources the index holds, sorted.
func (ix *Index) Sources() []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	seen := map[string]bool{}
	var out []string
	for _, d := range ix.docs {
		if !seen[d.Source] {
			seen[d.Source] = true
			out = append(out, d.Source)
		}
	}
	sort.Strings(out)
	return out
}

// RemoveSource drops every document of source.
func (ix *Index) RemoveSource(source string) int {
	ch, _ := ix.Replace(context.Background(), map[string][]Document{source: nil}, nil)
	return ch.Removed
}

// UpdatePlugin replaces the documents of one plugin's state with those of
// st (as plugin.Query returned it). The daemon calls it after every
// re-query it makes; only items whose text changed are re-embedded.
func (ix *Index) UpdatePlugin(ctx context.Context, plugin string, st any, globalFlags string) (Change, error) {
	docs, err := FromPluginState(plugin, st, globalFlags)
	if err != nil {
		return Change{}, err
	}
	return ix.ReplaceSource(ctx, StateSource(plugin), docs, nil)
}

// UpdateAudit adds (or replaces) the documents of audit log entries; the
// daemon calls it with each entry it appends. Entries already indexed
// with the same content are not re-embedded.
func (ix *Index) UpdateAudit(ctx context.Context, es []ledger.Entry, globalFlags string) (Change, error) {
	return ix.AddDocuments(ctx, AuditSource, FromAudit(es, globalFlags))
}

// AddDocuments adds docs to source, replacing those of the same ID and
// keeping the others (ReplaceSource drops them): the audit log grows by
// new entries. Documents already indexed with the same content are not
// re-embedded.
func (ix *Index) AddDocuments(ctx context.Context, source string, docs []Document) (Change, error) {
	ix.mu.RLock()
	all := make([]Document, 0, len(ix.docs)+len(docs))
	fresh := map[string]bool{}
	for _, d := range docs {
		fresh[d.ID] = true
	}
	for _, d := range ix.docs {
		if d.Source == source && !fresh[d.ID] {
			all = append(all, d)
		}
	}
	ix.mu.RUnlock()
	return ix.ReplaceSource(ctx, source, append(all, docs...), nil)
}

// Query is one search.
type Query struct {
	Text    string
	K       int      // results (default 10)
	Kinds   []string // only these kinds (all when empty)
	Ranking Ranking  // default Combined
}

// Result is one hit.
type Result struct {
	Rank    int      `json:"rank"`
	Score   float32  `json:"score"`
	Lexical float32  `json:"lexical"`
	Vector  float32  `json:"vector"`
	Snippet string   `json:"snippet"`
	Doc     Document `json:"document"`
	// Others counts the documents of the same member on other objects
	// of the service (not shown).
	Others int `json:"others,omitempty"`
}

// groupKey groups member documents by service, interface, kind and name;
// "" for documents that stand alone.
func groupKey(d *Document) string {
	switch d.Kind {
	case KindMethod, KindSignal, KindProperty, KindInterface:
	default:
		return ""
	}
	i := strings.IndexByte(d.ID, '#')
	if i < 0 {
		return ""
	}
	return d.Source + d.ID[i:]
}

// CheckQuery validates query text.
func CheckQuery(q string) error {
	switch {
	case len(q) > MaxQueryBytes:
		return fmt.Errorf("%w (got %d bytes)", ErrQueryLong, len(q))
	case !utf8.ValidString(q):
		return ErrQueryUTF8
	case strings.TrimSpace(q) == "":
		return ErrEmptyQuery
	}
	return nil
}

// QueryTerms are the search terms of a question: its tokens plus the
// compounds of adjacent words ("time zone" → timezone), which match the
// way names are written.
func QueryTerms(q string) (terms []string, weights []float32) {
	w := map[string]float32{}
	var order []string
	addTerm := func(t string, wt float32) {
		if _, ok := w[t]; !ok {
			order = append(order, t)
		}
		if wt > w[t] {
			w[t] = wt
		}
	}
	for _, t := range token.Tokens(q) {
		addTerm(t, 1)
	}
	words := strings.FieldsFunc(q, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	for i := 0; i+1 < len(words); i++ {
		c := token.Normalize(words[i] + words[i+1])
		if c == "" || len(c) > 64 {
			continue
		}
		switch {
		case embed.HasConcept(c):
			// a phrase of the synonym table ("shut down", "turn on",
			// "process id") is one term
			addTerm(c, 1)
		case !token.IsStopWord(words[i]) && !token.IsStopWord(words[i+1]):
			addTerm(c, 0.8)
		}
	}
	for _, t := range order {
		terms = append(terms, t)
		weights = append(weights, w[t])
	}
	return terms, weights
}

// expand adds the synonyms of the built-in table to lexical query terms,
// at a lower weight.
func expand(terms []string, weights []float32) ([]string, []float32) {
	have := map[string]bool{}
	for _, t := range terms {
		have[t] = true
	}
	lt, lw := append([]string(nil), terms...), append([]float32(nil), weights...)
	for i, t := range terms {
		for _, syn := range embed.Synonyms(t) {
			if !have[syn] {
				have[syn] = true
				lt = append(lt, syn)
				lw = append(lw, tune.SynonymWeight*weights[i])
			}
		}
	}
	return lt, lw
}

// Search ranks the documents for q.
func (ix *Index) Search(ctx context.Context, q Query) ([]Result, error) {
	if err := CheckQuery(q.Text); err != nil {
		return nil, err
	}
	terms, weights := QueryTerms(q.Text)
	if len(terms) == 0 {
		return nil, fmt.Errorf("%w (only stop words or punctuation in %q)", ErrEmptyQuery, q.Text)
	}
	if q.K <= 0 {
		q.K = 10
	}
	if q.Ranking == "" {
		q.Ranking = Combined
	}
	switch q.Ranking {
	case Combined, Lexical, Vector:
	default:
		return nil, fmt.Errorf("unknown ranking %q (combined, lexical or vector)", q.Ranking)
	}
	var qv []float32
	if q.Ranking != Lexical {
		v, err := ix.queryVector(ctx, q.Text, terms)
		if err != nil {
			return nil, err
		}
		qv = v
	}
	ix.mu.Lock()
	if ix.dirty || ix.lex == nil {
		ix.lex = buildLexical(ix.docs)
		ix.dirty = false
	}
	ix.mu.Unlock()
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	kinds := map[string]bool{}
	for _, k := range q.Kinds {
		kinds[k] = true
	}
	allowDoc := func(i int) bool { return len(kinds) == 0 || kinds[ix.docs[i].Kind] }

	lexScore := map[int]float32{}
	var maxLex float32
	if q.Ranking != Vector {
		acc := make([]float32, len(ix.docs))
		lt, lw := expand(terms, weights)
		touched := ix.lex.score(lt, lw, acc, nil)
		limit := candidates
		if q.Ranking == Lexical {
			limit = q.K
		}
		// one candidate per member shared by many objects (its best
		// object), so Stop on 150 units cannot take 150 places
		touched = ix.lex.collapse(touched, acc, allowDoc)
		// the best limit of the touched documents, without sorting them all
		cands := topByScore(touched, acc, limit, func(int) bool { return true })
		sort.Slice(cands, func(a, b int) bool {
			if acc[cands[a]] != acc[cands[b]] {
				return acc[cands[a]] > acc[cands[b]]
			}
			return ix.docs[cands[a]].ID < ix.docs[cands[b]].ID
		})
		for _, d := range cands {
			lexScore[d] = acc[d]
			maxLex = max(maxLex, acc[d])
		}
	}
	vecScore := map[int]float32{}
	var maxVec, minVec float32 = 0, 1
	if qv != nil && ix.vecs != nil {
		limit := candidates
		if q.Ranking == Vector {
			limit = q.K
		}
		var allow func(string) bool
		if len(kinds) > 0 {
			allow = func(id string) bool {
				i, ok := ix.byID[id]
				return ok && allowDoc(i)
			}
		}
		hits, err := ix.vecs.Search(qv, 4*limit, allow)
		if err != nil {
			return nil, err
		}
		taken := map[int32]bool{}
		n := 0
		for _, h := range hits {
			if i, ok := ix.byID[h.ID]; ok && n < limit {
				if g := ix.lex.group[i]; g >= 0 {
					if taken[g] {
						continue
					}
					taken[g] = true
				}
				n++
				vecScore[i] = h.Score
				maxVec = max(maxVec, h.Score)
				minVec = min(minVec, h.Score)
			}
		}
		// lexical candidates get their exact similarity too
		for i := range lexScore {
			if _, ok := vecScore[i]; !ok {
				if s, ok := ix.vecs.Score(qv, ix.docs[i].ID); ok {
					vecScore[i] = s
				}
			}
		}
	}
	type scored struct {
		i          int
		s, lx, vec float32
	}
	var all []scored
	seen := map[int]bool{}
	for _, m := range []map[int]float32{lexScore, vecScore} {
		for i := range m {
			if !seen[i] {
				seen[i] = true
				all = append(all, scored{i: i, lx: lexScore[i], vec: vecScore[i]})
			}
		}
	}
	switch {
	case q.Ranking == Lexical:
		for k := range all {
			all[k].s = all[k].lx
		}
	case q.Ranking == Vector:
		for k := range all {
			all[k].s = all[k].vec
		}
	case tune.RRFK > 0:
		// reciprocal rank fusion over the union of the candidates
		byLex := make([]int, len(all))
		for k := range byLex {
			byLex[k] = k
		}
		byVec := append([]int(nil), byLex...)
		sort.Slice(byLex, func(a, b int) bool { return all[byLex[a]].lx > all[byLex[b]].lx })
		sort.Slice(byVec, func(a, b int) bool { return all[byVec[a]].vec > all[byVec[b]].vec })
		for r, k := range byLex {
			if all[k].lx > 0 {
				all[k].s += tune.LexicalWeight / (tune.RRFK + float32(r+1))
			}
		}
		for r, k := range byVec {
			all[k].s += (1 - tune.LexicalWeight) / (tune.RRFK + float32(r+1))
		}
	default:
		for k := range all {
			var ln, vn float32
			if maxLex > 0 {
				ln = all[k].lx / maxLex
			}
			if maxVec > minVec {
				vn = max(0, (all[k].vec-minVec)/(maxVec-minVec))
			}
			all[k].s = tune.LexicalWeight*ln + (1-tune.LexicalWeight)*vn
		}
	}
	if q.Ranking == Combined {
		imperative := isImperative(q.Text)
		qt := map[string]bool{}
		for _, t := range terms {
			qt[t] = true
		}
		for k := range all {
			i := all[k].i
			if imperative && ix.docs[i].Kind == KindMethod {
				all[k].s *= 1 + tune.MethodBoost
			}
			if ix.lex.replica[i] && !namesAny(ix.lex.distinct[i], qt) {
				all[k].s *= 1 - tune.ReplicaPenalty
			}
		}
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].s != all[b].s {
			return all[a].s > all[b].s
		}
		return ix.docs[all[a].i].ID < ix.docs[all[b].i].ID
	})
	// The same member on many objects (Unit.Stop on every unit, Ping on
	// every item) is shown once, at its best-scoring object, with a count
	// of the others, so one interface cannot fill the page.
	var out []Result
	shown := map[int32]bool{}
	for _, x := range all {
		if len(out) == q.K {
			break
		}
		d := ix.docs[x.i]
		others := 0
		if g := ix.lex.group[x.i]; g >= 0 {
			if shown[g] {
				continue
			}
			shown[g] = true
			others = int(ix.lex.groupSize[g]) - 1
		}
		out = append(out, Result{Rank: len(out) + 1, Score: x.s, Lexical: x.lx, Vector: x.vec, Snippet: snippet(d, terms), Doc: d, Others: others})
	}
	return out, nil
}

// imperativeVerbs start a request for an action ("stop a service",
// "turn on ntp"): the verbs of system administration and of D-Bus method
// names, not of the labelled queries.
var imperativeVerbs = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`activate add apply assign attach bind block call cancel change clean clear close
		configure create deactivate delete describe detach disable echo edit emit enable find flush freeze get halt
		hibernate install invoke keep kill launch link list load lock make mask mount move open ping power preset
		put reboot refresh register release reload remove rename reset restart restore resume revert run save send
		set shut start stop subscribe suspend switch terminate thaw toggle trigger turn undo uninstall unlink
		unlock unmask unmount unregister unset unsubscribe update upgrade use`) {
		imperativeVerbs[w] = true
	}
}

// isImperative reports whether a query starts with an imperative verb.
func isImperative(q string) bool {
	f := strings.FieldsFunc(strings.ToLower(q), func(r rune) bool { return !unicode.IsLetter(r) })
	if len(f) > 0 && f[0] == "please" {
		f = f[1:]
	}
	return len(f) > 1 && imperativeVerbs[f[0]]
}

func namesAny(terms []string, q map[string]bool) bool {
	for _, t := range terms {
		if q[t] {
			return true
		}
	}
	return false
}

// topByScore returns up to k of docs with the highest acc, in no order.
func topByScore(docs []uint32, acc []float32, k int, allow func(int) bool) []int {
	h := make([]int, 0, k) // min-heap by acc
	less := func(a, b int) bool { return acc[h[a]] < acc[h[b]] }
	down := func(i int) {
		for {
			l, sm := 2*i+1, i
			if l < len(h) && less(l, sm) {
				sm = l
			}
			if r := l + 1; r < len(h) && less(r, sm) {
				sm = r
			}
			if sm == i {
				return
			}
			h[i], h[sm] = h[sm], h[i]
			i = sm
		}
	}
	for _, d := range docs {
		i := int(d)
		if len(h) == k && acc[i] <= acc[h[0]] {
			continue
		}
		if !allow(i) {
			continue
		}
		if len(h) < k {
			h = append(h, i)
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if !less(j, p) {
					break
				}
				h[j], h[p] = h[p], h[j]
				j = p
			}
			continue
		}
		h[0] = i
		down(0)
	}
	return h
}

// termVectorer is an embedder that can embed query terms directly (the
// built-in one), so that query compounds count.
type termVectorer interface {
	VectorTerms(terms []string) []float32
}

func (ix *Index) queryVector(ctx context.Context, q string, terms []string) ([]float32, error) {
	if tv, ok := ix.emb.(termVectorer); ok {
		return tv.VectorTerms(terms), nil
	}
	vs, err := ix.emb.Embed(ctx, []string{q})
	if err != nil {
		return nil, fmt.Errorf("embedding the query: %w", err)
	}
	if len(vs) != 1 {
		return nil, fmt.Errorf("embedding the query: %d vectors for one text", len(vs))
	}
	if ix.vecs != nil && len(vs[0]) != ix.vecs.Dim() {
		return nil, fmt.Errorf("embedding the query: dimension %d, the index holds %d: %w", len(vs[0]), ix.vecs.Dim(), embed.ErrDimension)
	}
	return vs[0], nil
}

// snippet is about 120 characters of the document around its first query
// term.
func snippet(d Document, terms []string) string {
	text := strings.Join(strings.Fields(d.Text), " ")
	lower := strings.ToLower(text)
	at := -1
	for _, t := range terms {
		if i := strings.Index(lower, t); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	const width = 120
	start := 0
	if at > width/3 {
		start = at - width/3
	}
	for start > 0 && start < len(text) && !utf8.RuneStart(text[start]) {
		start--
	}
	end := min(len(text), start+width)
	for end < len(text) && !utf8.RuneStart(text[end]) {
		end++
	}
	s := text[start:end]
	if start > 0 {
		s = "…" + s
	}
	if end < len(text) {
		s += "…"
	}
	return s
}

// Stats describe an index.
type Stats struct {
	Documents int            `json:"documents"`
	Kinds     map[string]int `json:"kinds"`
	Sources   map[string]int `json:"sources"`
	// Buses counts the D-Bus documents of each bus (system, session, an
	// address).
	Buses    map[string]int `json:"buses"`
	Vectors  int            `json:"vectors"`
	Dim      int            `json:"dim"`
	Embedder string         `json:"embedder"`
	Built    time.Time      `json:"built"`
	Updated  time.Time      `json:"updated"`
	Cache    *cache.Stats   `json:"cache,omitempty"`
}

// Stats counts the index.
func (ix *Index) Stats() Stats {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := Stats{Documents: len(ix.docs), Kinds: map[string]int{}, Sources: map[string]int{}, Buses: map[string]int{}, Embedder: ix.emb.ID(),
		Built: ix.Meta.Built, Updated: ix.Meta.Updated}
	for _, d := range ix.docs {
		st.Kinds[d.Kind]++
		st.Sources[d.Source]++
		if bus, ok := BusOfSource(d.Source); ok {
			st.Buses[bus]++
		}
	}
	if ix.vecs != nil {
		st.Vectors = ix.vecs.Len()
		st.Dim = ix.vecs.Dim()
	}
	if ix.cache != nil {
		cs := ix.cache.Stats()
		st.Cache = &cs
	}
	return st
}
