package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTestbedDamagedSnapshotManifestDoesNotBlockApply (issue 19): a
// truncated manifest of an earlier apply's snapshot, and a temporary file
// a killed `snapshot create` left, do not stop the next apply. The damage
// is recorded in the audit log, and `snapshot prune --corrupt` removes it.
func TestTestbedDamagedSnapshotManifestDoesNotBlockApply(t *testing.T) {
	m, env := userBed(t, "sd-a.service", "sd-b.service")
	dir := t.TempDir()
	sd := dir + "/s"
	op := func(args ...string) result {
		return run(t, env, "", append([]string{"--user", "--state-dir=" + sd}, args...)...)
	}
	docA := writeFile(t, dir, "a.json", `{"version":1,"plugins":{"systemd":{"units":{"sd-a.service":{"active_state":"active"}}}}}`)
	docB := writeFile(t, dir, "b.json", `{"version":1,"plugins":{"systemd":{"units":{"sd-b.service":{"active_state":"active"}}}}}`)
	wantCode(t, op("apply", "--yes", docA), 0, "first apply")
	if got := oracle(t, m, "is-active", "sd-a.service"); got != "active" {
		t.Fatalf("sd-a is %s after the first apply", got)
	}

	manifests, _ := filepath.Glob(filepath.Join(sd, "snapshots", "manifests", "*.json"))
	if len(manifests) != 1 {
		t.Fatalf("want the first apply's one snapshot manifest, found %v", manifests)
	}
	bad := manifests[0]
	fi, err := os.Stat(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(bad, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(sd, "snapshots", "blobs", ".0123abcd.json.tmp-4242")
	if err := os.WriteFile(tmp, []byte(`{"half":`), 0o600); err != nil {
		t.Fatal(err)
	}

	r := op("apply", "--yes", docB)
	wantCode(t, r, 0, "apply with a damaged old snapshot manifest")
	if !strings.Contains(r.stderr, bad) || !strings.Contains(r.stderr, "op-dbus snapshot prune --corrupt") {
		t.Errorf("the apply does not name the damaged manifest and the way out:\n%s", r)
	}
	if got := oracle(t, m, "is-active", "sd-b.service"); got != "active" {
		t.Errorf("sd-b is %s after the second apply", got)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("the temporary file of a killed snapshot is left: %v", err)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Errorf("the apply removed the damaged manifest on its own: %v", err)
	}

	type entry struct {
		Kind, Result, Message string
	}
	audit := func() []entry {
		t.Helper()
		r := op("audit", "log", "-o", "json")
		wantCode(t, r, 0, "audit log")
		var es []entry
		if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
			t.Fatalf("audit log: %v\n%s", err, r.stdout)
		}
		return es
	}
	find := func(es []entry, kind, text string) bool {
		for _, e := range es {
			if e.Kind == kind && strings.Contains(e.Message, text) {
				return true
			}
		}
		return false
	}
	es := audit()
	if !find(es, "snapshot-damage", bad) {
		t.Errorf("no snapshot-damage entry names %s: %+v", bad, es)
	}
	if n := len(es); n == 0 || es[n-1].Kind != "apply" || es[n-1].Result != "success" {
		t.Errorf("the second apply is not recorded as a success: %+v", es)
	}

	r = op("snapshot", "list", "-o", "json")
	wantCode(t, r, 0, "snapshot list")
	var list []struct{ ID string }
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 {
		t.Errorf("snapshot list: %v\n%s", err, r)
	}
	if !strings.Contains(r.stderr, bad) {
		t.Errorf("snapshot list does not warn about the damaged manifest:\n%s", r)
	}

	r = op("snapshot", "prune", "--corrupt", "--dry-run", "-o", "json")
	wantCode(t, r, 0, "prune --corrupt --dry-run")
	var pr struct {
		DryRun    bool `json:"dry_run"`
		Manifests []struct {
			Path, Reason string
		} `json:"manifests"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &pr); err != nil || !pr.DryRun || len(pr.Manifests) != 1 || pr.Manifests[0].Path != bad || pr.Manifests[0].Reason == "" {
		t.Fatalf("dry run: %v %+v\n%s", err, pr, r)
	}
	if _, err := os.Stat(bad); err != nil {
		t.Fatalf("the dry run removed the manifest: %v", err)
	}

	r = op("snapshot", "prune", "--corrupt")
	wantCode(t, r, 0, "prune --corrupt")
	if !strings.Contains(r.stdout, "Removed 1 damaged snapshot manifest") || !strings.Contains(r.stdout, bad) {
		t.Errorf("prune --corrupt output:\n%s", r)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("the damaged manifest is left: %v", err)
	}
	if !find(audit(), "snapshot-prune", "removed damaged snapshot manifest "+bad) {
		t.Errorf("the removal is not in the audit log")
	}
	r = op("snapshot", "list")
	wantCode(t, r, 0, "snapshot list after prune --corrupt")
	if strings.Contains(r.stderr, "damaged") {
		t.Errorf("still warns: %s", r.stderr)
	}
	wantCode(t, op("audit", "verify"), 0, "audit verify")
}
