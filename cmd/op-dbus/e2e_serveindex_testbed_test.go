package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// `op-dbus serve` keeps the search index of its state directory current: a
// unit stopped out of band is found in its new state, and the drift the
// daemon wrote to the audit log is found too, without `index update`.
func TestTestbedServeKeepsSearchIndexCurrent(t *testing.T) {
	m, env := serveBed(t, "idx-a.service")
	dir := t.TempDir()
	sd := "--state-dir=" + dir + "/state"
	r := run(t, env, "", sd, "--user", "index", "build", "--no-bus")
	wantCode(t, r, 0, "index build")
	doc := writeFile(t, dir, "host.json", `{"version":1,"plugins":{"systemd":{"units":{"idx-a.service":{"active_state":"active"}}}}}`)
	s := startServe(t, env, "--user", sd, "serve", "--state", doc)
	if o, err := m.Systemctl(context.Background(), "stop", "idx-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	s.wait(t, "drift", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if !s.stderrHas("search index: updated") {
		t.Fatalf("the daemon did not update the index:\n%s", s.Stderr())
	}
	type hit struct {
		ID   string `json:"id"`
		Kind string `json:"kind"`
		Text string `json:"text"`
	}
	find := func(kind, q string) []hit {
		t.Helper()
		r := run(t, env, "", sd, "--user", "search", "-o", "json", "--kind", kind, "-k", "5", q)
		wantCode(t, r, 0, "search "+q)
		var out []struct {
			Doc hit `json:"document"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("search -o json: %v\n%s", err, r.stdout)
		}
		var hits []hit
		for _, o := range out {
			hits = append(hits, o.Doc)
		}
		return hits
	}
	deadline := time.Now().Add(eventWait)
	for {
		hits := find("audit", "drift idx-a.service")
		if len(hits) > 0 && strings.Contains(hits[0].Text+hits[0].ID, "drift") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the drift entry is not found by search: %+v\n%s", hits, s.Stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}
	hits := find("unit", "idx-a.service")
	if len(hits) == 0 || !strings.Contains(hits[0].Text, "inactive") {
		t.Errorf("the unit's document does not say inactive after the stop: %+v", hits)
	}
}
