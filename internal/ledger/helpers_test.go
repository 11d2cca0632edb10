package ledger

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testEntry(i int) Entry {
	ok := i%7 != 3
	res := "success"
	if !ok {
		res = "rolled-back"
	}
	return Entry{
		Time:     time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second),
		Kind:     "apply",
		Source:   []string{"cli", "daemon", "api", "mcp"}[i%4],
		Actor:    Actor{UID: 0, User: "root", Client: fmt.Sprintf("client-%d", i%3)},
		Plugins:  []string{"systemd", "hostname"},
		Before:   fmt.Sprintf("sha256:%064x", i),
		After:    fmt.Sprintf("sha256:%064x", i+1),
		Document: fmt.Sprintf("sha256:%064x", 1000000+i),
		Ops: []OpRecord{
			{ID: fmt.Sprintf("systemd/nginx.service/start/%d", i), Plugin: "systemd", Description: "start nginx.service", Status: "done",
				Data: json.RawMessage(`{"unit":"nginx.service","active_state":"active"}`)},
			{ID: "hostname/static", Plugin: "hostname", Description: "set static hostname to web1", Status: "done",
				Data: json.RawMessage(`{"static":"web1"}`)},
		},
		Verified: &ok,
		Result:   res,
		Message:  fmt.Sprintf("applied document %d", i),
	}
}

func openT(t testing.TB, dir string) *Log {
	t.Helper()
	l, err := Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// buildLog creates a log with n entries appended in batches of 1, 2, 3, 1,
// 2, 3, ... and returns its directory (closed).
func buildLog(t testing.TB, n int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir)
	for i, b := 0, 1; i < n; b = b%3 + 1 {
		k := min(b, n-i)
		es := make([]Entry, k)
		for j := range es {
			es[j] = testEntry(i + j)
		}
		if _, err := l.AppendBatch(es); err != nil {
			t.Fatal(err)
		}
		i += k
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "audit")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := in.Stat()
		out, err := os.OpenFile(filepath.Join(dst, e.Name()), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// recordOffsets returns the offset of every record in an entries file.
func recordOffsets(t testing.TB, data []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(data); {
		_, n, err := decodeRecord(data[off:])
		if err != nil {
			t.Fatalf("record at %d: %v", off, err)
		}
		offs = append(offs, off)
		off += n
	}
	return offs
}

func mustVerify(t testing.TB, l *Log) VerifyReport {
	t.Helper()
	rep, err := l.Verify()
	if err != nil || !rep.OK {
		t.Fatalf("Verify: %v (report %+v)", err, rep)
	}
	return rep
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}
