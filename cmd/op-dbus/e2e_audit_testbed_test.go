package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTestbedAuditRecordsProvesAndDetectsTampering(t *testing.T) {
	_, env := userBed(t, "au-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"au-a.service":{"active_state":"active"}}}}}`)
	bad := writeFile(t, dir, "bad.json", `{"version":1,"plugins":{"systemd":{"units":{"au-a.service":{"active_state":"inactive"},"nonexistent-unit.service":{"active_state":"active"}}}}}`)
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", doc), 0, "apply")
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", bad), 1, "failing apply")
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "rollback", "--yes"), 0, "rollback")

	r := run(t, env, "", "--state-dir="+sd, "audit", "log", "-o", "json")
	wantCode(t, r, 0, "audit log")
	var es []struct {
		Seq    int    `json:"seq"`
		Kind   string `json:"kind"`
		Result string `json:"result"`
		Before string `json:"before"`
		After  string `json:"after"`
		Ops    []struct {
			Description, Status string
		} `json:"ops"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if len(es) != 3 || es[0].Kind != "apply" || es[0].Result != "success" || es[1].Result != "rolled-back" || es[2].Kind != "rollback" {
		t.Fatalf("entries: %+v", es)
	}
	if es[2].After != es[0].Before || es[0].Before == es[0].After {
		t.Errorf("state hashes do not show the rollback returning to the state before the apply: %+v", es)
	}
	if len(es[1].Ops) == 0 {
		t.Errorf("the failed apply's ops are not recorded")
	}

	wantCode(t, run(t, env, "", "--state-dir="+sd, "audit", "verify"), 0, "verify")
	r = run(t, env, "", "--state-dir="+sd, "audit", "proof", "1")
	wantCode(t, r, 0, "proof")
	receipt := writeFile(t, dir, "receipt.json", r.stdout)
	r = run(t, env, "", "--state-dir="+sd, "audit", "key")
	wantCode(t, r, 0, "key")
	key := writeFile(t, dir, "host.pub", r.stdout)
	r = run(t, nil, "", "audit", "verify-receipt", receipt, "--key", key)
	wantCode(t, r, 0, "verify-receipt")

	// A receipt checked against another log's key fails.
	other := dir + "/other"
	wantCode(t, run(t, env, "", "--user", "--state-dir="+other, "apply", "--yes", bad), 1, "apply in another state dir")
	r = run(t, env, "", "--state-dir="+other, "audit", "key")
	otherKey := writeFile(t, dir, "other.pub", r.stdout)
	r = run(t, nil, "", "audit", "verify-receipt", receipt, "--key", otherKey)
	wantCode(t, r, 1, "receipt with another log's key")
	if !strings.Contains(r.stderr, "another log") {
		t.Errorf("error: %s", r.stderr)
	}

	// Flip one byte of the stored entry 1: verify names it.
	p := filepath.Join(sd, "audit", "entries")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), `"kind":"apply","source":"cli"`)
	j := strings.Index(string(b[i+1:]), `"kind":"apply"`) + i + 1
	b[j+9] ^= 0x01 // inside entry 1's "apply"
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "", "--state-dir="+sd, "audit", "verify")
	wantCode(t, r, 1, "verify after tampering")
	if !strings.Contains(r.stdout+r.stderr, "entry 1") {
		t.Errorf("verify does not name entry 1:\n%s", r)
	}
}
