package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type searchHit struct {
	Rank     int     `json:"rank"`
	Score    float64 `json:"score"`
	Document struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
		Open string `json:"open"`
	} `json:"document"`
}

func searchJSON(t *testing.T, env []string, dir string, args ...string) []searchHit {
	t.Helper()
	r := run(t, env, "", append([]string{"--state-dir=" + dir, "search", "-o", "json"}, args...)...)
	wantCode(t, r, 0, "search "+strings.Join(args, " "))
	var hits []searchHit
	if err := json.Unmarshal([]byte(r.stdout), &hits); err != nil {
		t.Fatalf("search -o json: %v\n%s", err, r)
	}
	return hits
}

func rankOf(hits []searchHit, id string) int {
	for _, h := range hits {
		if h.Document.ID == id {
			return h.Rank
		}
	}
	return 0
}

// TestTestbedSearchEndToEnd builds an index of the identity bed's bus, the
// plugin states and a real audit log, searches it, follows a hit's open
// command, updates incrementally after a change on the bus, and refuses bad
// input and damaged files with exit 1.
func TestTestbedSearchEndToEnd(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"hostname":{"static_hostname":"search-web1","location":"rack 9"}}}`)
	wantCode(t, run(t, env, "", "--state-dir="+dir, "apply", "--yes", doc), 0, "apply")

	r := run(t, env, "", "--state-dir="+dir, "index", "build", "--service", "org.freedesktop.hostname1",
		"--service", "org.freedesktop.timedate1", "--service", "org.freedesktop.locale1")
	wantCode(t, r, 0, "index build")
	if !strings.Contains(r.stderr, "embedded") || !strings.Contains(r.stdout, "documents") {
		t.Errorf("build output:\n%s", r)
	}

	const setTZ = "dbus/system/org.freedesktop.timedate1/org/freedesktop/timedate1#org.freedesktop.timedate1/method/SetTimezone"
	hits := searchJSON(t, env, dir, "set the time zone")
	if rk := rankOf(hits, setTZ); rk < 1 || rk > 5 {
		t.Fatalf("SetTimezone at rank %d: %+v", rk, hits)
	}
	// MCP's search tool on the same state directory finds the bus
	// documents of that index without being told the services.
	cs := mcpClient(t, env, "--state-dir="+dir, "mcp")
	var out struct {
		Results []struct {
			Doc struct {
				ID string `json:"id"`
			} `json:"document"`
		} `json:"results"`
	}
	mcpCall(t, cs, "search", map[string]any{"query": "set the time zone", "k": 5}, &out)
	found := false
	for _, r := range out.Results {
		found = found || r.Doc.ID == setTZ
	}
	if !found {
		t.Errorf("MCP search without services does not find %s from the state directory's index: %+v", setTZ, out.Results)
	}
	// text output: rank, score, kind, ID, snippet and the command to open it
	r = run(t, env, "", "--state-dir="+dir, "search", "-k", "3", "set the time zone")
	wantCode(t, r, 0, "search text")
	for _, want := range []string{"method", setTZ, "SetTimezone(s timezone", "open: op-dbus introspect --bus system --service org.freedesktop.timedate1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("search output lacks %q:\n%s", want, r.stdout)
		}
	}

	// the audit entry of the apply, and its open command works
	hits = searchJSON(t, env, dir, "--kind", "audit", "static hostname search-web1")
	if len(hits) == 0 || hits[0].Document.ID != "audit/0" {
		t.Fatalf("audit hits: %+v", hits)
	}
	open := strings.Fields(hits[0].Document.Open)
	if open[0] != "op-dbus" {
		t.Fatalf("open command %q", hits[0].Document.Open)
	}
	r = run(t, env, "", open[1:]...)
	wantCode(t, r, 0, "open "+hits[0].Document.Open)
	if !strings.Contains(r.stdout, "search-web1") {
		t.Errorf("audit show: %s", r)
	}
	// the plugin state item
	hits = searchJSON(t, env, dir, "--kind", "setting", "location rack 9")
	if rankOf(hits, "state/hostname/location") != 1 {
		t.Errorf("state/hostname/location: %+v", hits)
	}

	// incremental update: one property changes on the bus
	if out, err := b.Busctl(context.Background(), "call", "org.freedesktop.hostname1", "/org/freedesktop/hostname1",
		"org.freedesktop.hostname1", "SetPrettyHostname", "sb", "Search Test Box", "false"); err != nil {
		t.Fatalf("SetPrettyHostname: %v %s", err, out)
	}
	r = run(t, env, "", "--state-dir="+dir, "index", "update", "-o", "json")
	wantCode(t, r, 0, "index update")
	var up struct {
		Documents int `json:"documents"`
		Change    struct {
			Changed, Added, Removed, Embedded int
			Unchanged                         int `json:"unchanged"`
		} `json:"change"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &up); err != nil {
		t.Fatal(err)
	}
	// PrettyHostname's property document and the hostname plugin's
	// pretty_hostname setting changed; nothing else was embedded again.
	if up.Change.Embedded < 2 || up.Change.Embedded > 3 || up.Change.Changed != up.Change.Embedded || up.Change.Unchanged < 50 {
		t.Errorf("update: %+v", up)
	}
	hits = searchJSON(t, env, dir, "Search Test Box")
	if len(hits) == 0 || !strings.Contains(hits[0].Document.ID, "PrettyHostname") && !strings.Contains(hits[0].Document.ID, "pretty_hostname") {
		t.Errorf("after update: %+v", hits)
	}

	// stats
	r = run(t, env, "", "--state-dir="+dir, "index", "stats")
	wantCode(t, r, 0, "stats")
	if !strings.Contains(r.stdout, "method") || !strings.Contains(r.stdout, "audit") {
		t.Errorf("stats:\n%s", r.stdout)
	}

	// bad input: exit 1 with a clear message, never a crash
	r = run(t, env, strings.Repeat("timezone ", 120000), "--state-dir="+dir, "search", "-") // 1 MB on stdin
	wantCode(t, r, 1, "1 MB query")
	if !strings.Contains(r.stderr, "longer than 4096 bytes") {
		t.Errorf("1 MB query: %.300s", r.stderr)
	}
	for _, c := range []struct{ q, want string }{
		{"", "empty query"},
		{"   ", "empty query"},
		{strings.Repeat("timezone ", 10000), "longer than 4096 bytes"},
		{"set \xff\xfe zone", "not valid UTF-8"},
		{"the of and", "empty query"},
	} {
		r := run(t, env, "", "--state-dir="+dir, "search", c.q)
		wantCode(t, r, 1, "bad query")
		if !strings.Contains(r.stderr, c.want) || strings.Contains(r.stderr, "panic") {
			t.Errorf("query %.20q: stderr %.300s", c.q, r.stderr)
		}
	}

	// a corrupt cache is detected, not used, and rebuilt
	vec := filepath.Join(dir, "search", "vectors.bin")
	flip(t, vec, 200)
	r = run(t, env, "", "--state-dir="+dir, "search", "set the time zone")
	wantCode(t, r, 0, "search with a corrupt cache")
	if !strings.Contains(r.stderr, "checksum mismatch") || !strings.Contains(r.stdout, setTZ) {
		t.Errorf("corrupt cache:\n%s", r)
	}
	// a corrupt index is refused with exit 1 and rebuilt by update
	idx := filepath.Join(dir, "search", "index.bin")
	flip(t, idx, 100)
	r = run(t, env, "", "--state-dir="+dir, "search", "set the time zone")
	wantCode(t, r, 1, "search with a corrupt index")
	if !strings.Contains(r.stderr, "corrupt") || !strings.Contains(r.stderr, "index update") {
		t.Errorf("corrupt index: %s", r)
	}
	// an index of an older format version: rebuilt, not misread
	data, _ := os.ReadFile(idx)
	data[8] = 0 // version 0
	if err := os.WriteFile(idx, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "", "--state-dir="+dir, "search", "set the time zone")
	wantCode(t, r, 1, "search with an old index")
	if !strings.Contains(r.stderr, "version 0") {
		t.Errorf("old index: %s", r)
	}
	r = run(t, env, "", "--state-dir="+dir, "index", "update")
	wantCode(t, r, 0, "update rebuilds")
	if !strings.Contains(r.stderr, "rebuilding") {
		t.Errorf("update of an old index: %s", r)
	}
	if hits := searchJSON(t, env, dir, "set the time zone"); rankOf(hits, setTZ) == 0 {
		t.Errorf("after rebuild: %+v", hits)
	}

	// help teaches
	r = run(t, env, "", "search", "--help")
	wantCode(t, r, 0, "search --help")
	if !strings.Contains(r.stdout, "op-dbus search \"set the time zone\"") {
		t.Errorf("help: %s", r.stdout)
	}
	wantCode(t, run(t, env, "", "--state-dir="+t.TempDir(), "search", "anything"), 1, "search without an index")
}

func flip(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off >= len(b) {
		off = len(b) - 1
	}
	b[off] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
