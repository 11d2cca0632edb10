package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 19 (a): one byte flipped in the middle of the audit log's entries
// file makes the next apply refuse (exit 1, naming the audit log) before
// it changes anything; `audit verify` names the entry.
func TestTestbedAuditIntegrityFlipRefusesApply(t *testing.T) {
	m, env := userBed(t, "ai-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	up := writeFile(t, dir, "up.json", `{"version":1,"plugins":{"systemd":{"units":{"ai-a.service":{"active_state":"active"}}}}}`)
	down := writeFile(t, dir, "down.json", `{"version":1,"plugins":{"systemd":{"units":{"ai-a.service":{"active_state":"inactive"}}}}}`)
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", up), 0, "apply up")
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", down), 0, "apply down")
	wantCode(t, run(t, env, "", "--state-dir="+sd, "audit", "verify"), 0, "verify of the clean log")

	p := filepath.Join(sd, "audit", "entries")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}

	r := run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", up)
	wantCode(t, r, 1, "apply to a damaged audit log")
	if !strings.Contains(r.stderr, "audit log is corrupt") || !strings.Contains(r.stderr, filepath.Join(sd, "audit")) || !strings.Contains(r.stderr, "(entries, offset ") {
		t.Errorf("the refusal does not name the audit log, file and offset:\n%s", r)
	}
	if got := oracle(t, m, "is-active", "ai-a.service"); got != "inactive" {
		t.Errorf("the refused apply changed the unit: is-active = %s", got)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(after, b) {
		t.Error("the refused apply wrote to the damaged entries file")
	}

	r = run(t, env, "", "--state-dir="+sd, "audit", "verify")
	wantCode(t, r, 1, "verify of the damaged log")
	if !strings.Contains(r.stdout, "(entries, offset ") || !strings.Contains(r.stderr, "damaged") {
		t.Errorf("verify does not name the damage:\n%s", r)
	}
}

// Issue 19 (b): `truncate -s -10 audit/checkpoints` is damage: `audit
// verify` exits 1 naming the checkpoints file, and removes nothing. A
// genuine torn tail (bytes after the last acknowledged checkpoint) is
// repaired, and verify says so with exit 1 once, then 0.
func TestTestbedAuditIntegrityCheckpointTruncation(t *testing.T) {
	_, env := userBed(t, "ai-b.service")
	dir := t.TempDir()
	sd := dir + "/s"
	up := writeFile(t, dir, "up.json", `{"version":1,"plugins":{"systemd":{"units":{"ai-b.service":{"active_state":"active"}}}}}`)
	down := writeFile(t, dir, "down.json", `{"version":1,"plugins":{"systemd":{"units":{"ai-b.service":{"active_state":"inactive"}}}}}`)
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", up), 0, "apply up")
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", down), 0, "apply down")
	audit := filepath.Join(sd, "audit")
	ckp := filepath.Join(audit, "checkpoints")
	entries, _ := os.ReadFile(filepath.Join(audit, "entries"))
	ck, _ := os.ReadFile(ckp)

	// A torn tail after the last acknowledged checkpoint: repaired.
	if err := os.WriteFile(ckp, append(append([]byte(nil), ck...), make([]byte, 50)...), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, env, "", "--state-dir="+sd, "audit", "verify")
	wantCode(t, r, 1, "verify that had to repair a torn tail")
	if !strings.Contains(r.stdout, "repaired: checkpoints") || !strings.Contains(r.stderr, "was repaired") {
		t.Errorf("verify does not say what it repaired:\n%s", r)
	}
	wantCode(t, run(t, env, "", "--state-dir="+sd, "audit", "verify"), 0, "verify after the repair")

	// The acknowledged last checkpoint torn by truncation: damage.
	if err := os.Truncate(ckp, int64(len(ck)-10)); err != nil {
		t.Fatal(err)
	}
	r = run(t, env, "", "--state-dir="+sd, "audit", "verify")
	wantCode(t, r, 1, "verify of a truncated checkpoints file")
	if !strings.Contains(r.stdout+r.stderr, "(checkpoints, offset ") || !strings.Contains(r.stdout+r.stderr, "truncated") || strings.Contains(r.stdout+r.stderr, "repaired") {
		t.Errorf("verify does not report the truncation as damage:\n%s", r)
	}
	if strings.Contains(r.stdout, "OK:") {
		t.Errorf("verify printed OK:\n%s", r)
	}
	if after, _ := os.ReadFile(filepath.Join(audit, "entries")); !bytes.Equal(after, entries) {
		t.Error("entries were removed")
	}
	if fi, err := os.Stat(ckp); err != nil || fi.Size() != int64(len(ck)-10) {
		t.Errorf("the checkpoints file was changed: %v %v", fi.Size(), err)
	}
	r = run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", up)
	wantCode(t, r, 1, "apply to a log with a truncated checkpoint")
	if !strings.Contains(r.stderr, "audit log is corrupt") {
		t.Errorf("apply does not name the audit log:\n%s", r)
	}
}

// The daemon verifies the whole audit log when it starts: a damaged log is
// reported as an event, and enforce mode then corrects nothing, because
// nothing is changed that cannot be recorded.
func TestTestbedServeVerifiesAuditLogAtStart(t *testing.T) {
	m, env := userBed(t, "av-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	up := writeFile(t, dir, "up.json", `{"version":1,"plugins":{"systemd":{"units":{"av-a.service":{"active_state":"active"}}}}}`)
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", up), 0, "apply up")
	if o, err := m.Systemctl(context.Background(), "stop", "av-a.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	p := filepath.Join(sd, "audit", "entries")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, env, "--user", "--state-dir="+sd, "serve", "--state", up, "--mode", "enforce")
	// The verification runs before "ready", which startServe waits for.
	if !s.stderrHas("no change will be applied until it is looked at") {
		t.Errorf("the daemon did not report the damaged audit log at start:\n%s", s.Stderr())
	}
	ev := s.wait(t, "correction", func(e daemonEvent) bool { return e.Plugin == "systemd" })
	if ev.Result != "failed" || !strings.Contains(ev.raw, "audit") {
		t.Errorf("correction with a damaged audit log: %s", ev.raw)
	}
	if got := oracle(t, m, "is-active", "av-a.service"); got != "inactive" {
		t.Errorf("av-a.service %s: the daemon changed the host without an audit log", got)
	}
}
