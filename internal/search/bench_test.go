package search

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/op-dbus/op-dbus/internal/search/cache"
	"github.com/op-dbus/op-dbus/internal/search/embed"
)

// words make synthetic documents that look like D-Bus members.
var words = []string{"Set", "Get", "List", "Unit", "Job", "Timezone", "Hostname", "Static", "Pretty", "Locale", "Keyboard", "Layout",
	"Start", "Stop", "Restart", "Reload", "Mask", "Enable", "Files", "Environment", "Control", "Group", "Memory", "CPU", "Limit",
	"Device", "Address", "Route", "Bridge", "Port", "Peer", "Endpoint", "Active", "State", "Sub", "Load", "Path", "Socket",
	"Timer", "Mount", "Slice", "Scope", "Target", "Kill", "Signal", "Mode", "Level", "Label", "Index", "Name"}

func bigCorpus(n int) []Document {
	docs := make([]Document, n)
	for i := range docs {
		a, b, c := words[i%len(words)], words[(i/7)%len(words)], words[(i/331)%len(words)]
		svc := fmt.Sprintf("org.example.Service%d", i%40)
		docs[i] = Document{ID: fmt.Sprintf("dbus/system/%s/obj%d#%s.%s/method/%s%s%s", svc, i/20, svc, c, a, b, c),
			Kind: KindMethod, Name: a + b + c, Context: fmt.Sprintf("%s.%s /org/example/obj%d %s", svc, c, i/20, svc),
			Text: fmt.Sprintf("method %s%s%s(s %s, b interactive) value %d", a, b, c, b, i),
			Open: "op-dbus introspect --bus system --service " + svc, Source: "dbus/system/" + svc}
	}
	return docs
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2], ds[len(ds)*99/100]
}

// BenchmarkCacheHit times single Gets of a cache mapped from its file,
// reporting p50/p99 from its own loop (one timer read per call).
func BenchmarkCacheHit(b *testing.B) {
	p := filepath.Join(b.TempDir(), VectorFile)
	emb := embed.NewBuiltin(0)
	c, _ := cache.Open(p, emb.Dim(), emb.ID(), 0)
	const n = 100_000
	docs := bigCorpus(n)
	keys := make([]uint64, n)
	for i := range docs {
		keys[i] = docs[i].Hash()
		_ = c.Put(keys[i], emb.Vector(docs[i].EmbedText()))
	}
	_ = c.Save()
	c.Close()
	c, _ = cache.Open(p, emb.Dim(), emb.ID(), 0)
	defer c.Close()
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := keys[(i*7919)%n]
		t0 := time.Now()
		v, ok := c.Get(k)
		ds = append(ds, time.Since(t0))
		if !ok || len(v) != emb.Dim() {
			b.Fatal("miss")
		}
	}
	b.StopTimer()
	p50, p99 := percentiles(ds)
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(p99.Nanoseconds()), "p99-ns")
}

// BenchmarkEmbedBuiltin is the cost a cache hit saves with the built-in
// embedder: one document's vector.
func BenchmarkEmbedBuiltin(b *testing.B) {
	emb := embed.NewBuiltin(0)
	docs := bigCorpus(1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = emb.Vector(docs[i%len(docs)].EmbedText())
	}
}

// BenchmarkEmbedHTTP is the external path: one text per request to a
// local OpenAI-compatible endpoint (ours, embedding with the built-in
// embedder, so this is the protocol's cost, not a model's).
func BenchmarkEmbedHTTP(b *testing.B) {
	bi := embed.NewBuiltin(0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Input []string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		type item struct {
			Index     int       `json:"index"`
			Embedding []float32 `json:"embedding"`
		}
		var resp struct {
			Data []item `json:"data"`
		}
		for i, s := range req.Input {
			resp.Data = append(resp.Data, item{i, bi.Vector(s)})
		}
		_ = json.NewEncoder(w).Encode(resp)
	}))
	defer srv.Close()
	h := embed.NewHTTP(srv.URL, "m", bi.Dim())
	docs := bigCorpus(1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Embed(context.Background(), []string{docs[i%len(docs)].EmbedText()}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndexBuild100k embeds, caches and indexes 100,000 documents
// (the lexical index is built by the first search) and reports the heap
// per document.
func BenchmarkIndexBuild100k(b *testing.B) {
	docs := bigCorpus(100_000)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := filepath.Join(b.TempDir(), VectorFile)
		emb := embed.NewBuiltin(0)
		c, _ := cache.Open(p, emb.Dim(), emb.ID(), 0)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		b.StartTimer()
		ix := New(emb, c, nil)
		if _, err := ix.ReplaceSource(context.Background(), "x", relabel(docs, "x"), nil); err != nil {
			b.Fatal(err)
		}
		if _, err := ix.Search(context.Background(), Query{Text: "set timezone"}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(len(docs)), "heap-B/doc")
		runtime.KeepAlive(ix)
		c.Close()
		b.StartTimer()
	}
}

func relabel(docs []Document, src string) []Document {
	out := make([]Document, len(docs))
	copy(out, docs)
	for i := range out {
		out[i].Source = src
	}
	return out
}

var benchQueries = []string{"set the time zone", "restart unit", "bridge port", "memory limit of a slice", "kill signal", "StaticHostname",
	"list jobs", "socket path", "enable files", "keyboard layout"}

func benchSearch(b *testing.B, n int, r Ranking) {
	emb := embed.NewBuiltin(0)
	ix := New(emb, nil, nil)
	if _, err := ix.ReplaceSource(context.Background(), "x", relabel(bigCorpus(n), "x"), nil); err != nil {
		b.Fatal(err)
	}
	_, _ = ix.Search(context.Background(), Query{Text: "warm"})
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := ix.Search(context.Background(), Query{Text: benchQueries[i%len(benchQueries)], K: 10, Ranking: r}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	p50, p99 := percentiles(ds)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

func BenchmarkSearch10k(b *testing.B)         { benchSearch(b, 10_000, Combined) }
func BenchmarkSearch100k(b *testing.B)        { benchSearch(b, 100_000, Combined) }
func BenchmarkSearch100kLexical(b *testing.B) { benchSearch(b, 100_000, Lexical) }
func BenchmarkSearch100kVector(b *testing.B)  { benchSearch(b, 100_000, Vector) }

// BenchmarkCacheOpenColdWarm opens the 100k-vector cache file and reads
// every vector once, with the file dropped from the page cache first
// (cold) or not (warm): what the page cache is worth here.
func BenchmarkCacheOpenColdWarm(b *testing.B) {
	p := filepath.Join(b.TempDir(), VectorFile)
	emb := embed.NewBuiltin(0)
	c, _ := cache.Open(p, emb.Dim(), emb.ID(), 0)
	docs := bigCorpus(100_000)
	keys := make([]uint64, len(docs))
	for i := range docs {
		keys[i] = docs[i].Hash()
		_ = c.Put(keys[i], emb.Vector(docs[i].EmbedText()))
	}
	_ = c.Save()
	c.Close()
	st, _ := os.Stat(p)
	// compression: how much smaller would the vectors be?
	data, _ := os.ReadFile(p)
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	t0 := time.Now()
	_, _ = zw.Write(data)
	_ = zw.Close()
	gz := time.Since(t0)
	b.ReportMetric(float64(z.Len())/float64(st.Size()), "gzip-ratio")
	b.ReportMetric(float64(gz.Milliseconds()), "gzip-ms")
	for _, cold := range []bool{true, false} {
		var total time.Duration
		for i := 0; i < b.N; i++ {
			if cold {
				f, _ := os.Open(p)
				_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
				f.Close()
			}
			t0 := time.Now()
			c, _ := cache.Open(p, emb.Dim(), emb.ID(), 0)
			var s float32
			for _, k := range keys {
				v, _ := c.Get(k)
				s += v[0]
			}
			total += time.Since(t0)
			c.Close()
		}
		name := "warm-ms"
		if cold {
			name = "cold-ms"
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(b.N), name)
	}
	b.ReportMetric(float64(st.Size())/float64(len(docs)), "file-B/doc")
}
