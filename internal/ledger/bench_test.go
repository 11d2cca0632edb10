package ledger

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The 1,000,000-entry log is built once per test binary run (about 10 s),
// in batches of 1000 (so it has 1000 checkpoints). OPDBUS_LEDGER_BENCH_N
// overrides the size.
var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
	benchN    = 1_000_000
)

func cleanupBench() {
	if benchDir != "" {
		os.RemoveAll(filepath.Dir(benchDir))
	}
}

func benchLog(b *testing.B) *Log {
	b.Helper()
	benchOnce.Do(func() {
		if s := os.Getenv("OPDBUS_LEDGER_BENCH_N"); s != "" {
			benchN, _ = strconv.Atoi(s)
		}
		tmp, err := os.MkdirTemp("", "ledger-bench-")
		if err != nil {
			benchErr = err
			return
		}
		benchDir = filepath.Join(tmp, "audit")
		start := time.Now()
		l, err := Open(benchDir)
		if err != nil {
			benchErr = err
			return
		}
		defer l.Close()
		const batch = 1000
		es := make([]Entry, batch)
		for i := 0; i < benchN; i += batch {
			k := min(batch, benchN-i)
			for j := 0; j < k; j++ {
				es[j] = testEntry(i + j)
			}
			if _, err := l.AppendBatch(es[:k]); err != nil {
				benchErr = err
				return
			}
		}
		fi, _ := os.Stat(filepath.Join(benchDir, "entries"))
		b.Logf("built a log of %d entries (%d MB) in %v", benchN, fi.Size()>>20, time.Since(start).Round(time.Millisecond))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	l, err := Open(benchDir)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkAppend(b *testing.B) {
	l := openT(b, filepath.Join(b.TempDir(), "audit"))
	defer l.Close()
	e := testEntry(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Append(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendBatch100(b *testing.B) {
	l := openT(b, filepath.Join(b.TempDir(), "audit"))
	defer l.Close()
	es := make([]Entry, 100)
	for i := range es {
		es[i] = testEntry(i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.AppendBatch(es); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(es)), "ns/entry")
}

func BenchmarkVerify1M(b *testing.B) {
	l := benchLog(b)
	defer l.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := l.Verify()
		if err != nil {
			b.Fatal(err)
		}
		if rep.Entries != uint64(benchN) {
			b.Fatalf("verified %d entries", rep.Entries)
		}
	}
}

func BenchmarkOpen1M(b *testing.B) {
	benchLog(b).Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		l, err := Open(benchDir)
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
	}
}

func BenchmarkInclusionProof1M(b *testing.B) {
	l := benchLog(b)
	defer l.Close()
	r := rand.New(rand.NewPCG(1, 1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.InclusionProof(r.Uint64N(uint64(benchN))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConsistencyProof1M(b *testing.B) {
	l := benchLog(b)
	defer l.Close()
	r := rand.New(rand.NewPCG(1, 1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		old := (1 + r.Uint64N(uint64(benchN/1000-1))) * 1000 // a checkpointed size
		if _, err := l.ConsistencyProof(old); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyReceipt(b *testing.B) {
	l := benchLog(b)
	defer l.Close()
	var rs []Receipt
	for i := 0; i < 64; i++ {
		r, err := l.InclusionProof(uint64(i * (benchN / 64)))
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	key := l.PublicKey()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := VerifyReceipt(rs[i%len(rs)], key); err != nil {
			b.Fatal(err)
		}
	}
}
