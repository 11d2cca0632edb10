package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startApply runs op-dbus in the background and returns the command.
func startApply(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	return cmd, &out
}

// waitPhase polls the journal until the transaction reaches phase.
func waitPhase(t *testing.T, stateDir, phase string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(filepath.Join(stateDir, "journal.json"))
		if err == nil {
			var j struct {
				Phase string `json:"phase"`
			}
			if json.Unmarshal(b, &j) == nil && j.Phase == phase {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the transaction never reached %q", phase)
}

func TestTestbedConfirmTimerRollsBackWithoutCommit(t *testing.T) {
	m, env := userBed(t, "cf-a.service")
	dir := t.TempDir()
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"cf-a.service":{"active_state":"active","enabled":true}}}}}`)
	r := run(t, env, "", "--user", "--state-dir="+dir+"/s", "apply", "--yes", "--confirm-within", "1500ms", doc)
	wantCode(t, r, 1, "unconfirmed apply")
	if !strings.Contains(r.stdout, "Waiting for confirmation") || !strings.Contains(r.stdout, "every change was rolled back, and that is verified") {
		t.Errorf("output:\n%s", r)
	}
	if got := oracle(t, m, "is-active", "cf-a.service"); got != "inactive" {
		t.Errorf("unit %s after the timer ran out", got)
	}
	if got := oracle(t, m, "is-enabled", "cf-a.service"); got != "disabled" {
		t.Errorf("unit %s after the timer ran out", got)
	}
}

func TestTestbedConfirmThenCommitKeepsChanges(t *testing.T) {
	m, env := userBed(t, "cf-b.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"cf-b.service":{"active_state":"active"}}}}}`)
	cmd, out := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", "--confirm-within", "60s", doc)
	waitPhase(t, sd, "awaiting-confirm")
	// A second transaction meanwhile is refused, naming the holder.
	r := run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", doc)
	wantCode(t, r, 1, "concurrent apply")
	if !strings.Contains(r.stderr, "another op-dbus transaction holds") || !strings.Contains(r.stderr, "pid") {
		t.Errorf("refusal does not name the holder: %s", r.stderr)
	}
	r = run(t, env, "", "--state-dir="+sd, "commit")
	wantCode(t, r, 0, "commit")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("apply after commit: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), "Confirmed.") {
		t.Errorf("apply output:\n%s", out)
	}
	if got := oracle(t, m, "is-active", "cf-b.service"); got != "active" {
		t.Errorf("unit %s after commit", got)
	}
	if _, err := os.Stat(filepath.Join(sd, "journal.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after commit: %v", err)
	}
}

func TestTestbedKillDuringConfirmWaitIsRecovered(t *testing.T) {
	m, env := userBed(t, "kw-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"kw-a.service":{"active_state":"active"}}}}}`)
	cmd, _ := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", "--confirm-within", "60s", doc)
	waitPhase(t, sd, "awaiting-confirm")
	if got := oracle(t, m, "is-active", "kw-a.service"); got != "active" {
		t.Fatalf("apply did not start the unit: %s", got)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
	r := run(t, env, "", "--user", "--state-dir="+sd, "query", "-p", "systemd")
	wantCode(t, r, 0, "next invocation")
	if !strings.Contains(r.stderr, "unfinished transaction") || !strings.Contains(r.stderr, "rolled back and verified") {
		t.Errorf("recovery not reported: %s", r.stderr)
	}
	if got := oracle(t, m, "is-active", "kw-a.service"); got != "inactive" {
		t.Errorf("unit %s after recovery", got)
	}
	if _, err := os.Stat(filepath.Join(sd, "journal.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after recovery")
	}
}

func TestTestbedKillDuringApplyIsRecovered(t *testing.T) {
	m, env := userBed(t, "ka-fast.service")
	slow := "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sleep 3\n"
	if err := os.WriteFile(filepath.Join(m.DataUnitDir, "ka-slow.service"), []byte(slow), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"ka-fast.service":{"active_state":"active"},"ka-slow.service":{"active_state":"active"}}}}}`)
	cmd, _ := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", doc)
	waitPhase(t, sd, "applying")
	deadline := time.Now().Add(20 * time.Second)
	for oracle(t, m, "is-active", "ka-fast.service") != "active" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL) // while ka-slow's start job runs
	_, _ = cmd.Process.Wait()
	// The killed apply's start job finishes by itself; recovery must still
	// restore both units.
	r := run(t, env, "", "--user", "--state-dir="+sd, "verify", doc)
	if !strings.Contains(r.stderr, "rolled back and verified") {
		t.Fatalf("no recovery: %s", r)
	}
	wantCode(t, r, 2, "verify after recovery")
	if got := oracle(t, m, "is-active", "ka-fast.service"); got != "inactive" {
		t.Errorf("ka-fast is %s after recovery", got)
	}
	// Stopping a oneshot in the middle of its start leaves it "failed"
	// (its process was killed): not running, which op-dbus's model counts
	// as inactive.
	if got := oracle(t, m, "is-active", "ka-slow.service"); got != "inactive" && got != "failed" {
		t.Errorf("ka-slow is %s after recovery", got)
	}
}

func TestTestbedRollbackCommandAndSnapshots(t *testing.T) {
	m, env := userBed(t, "rb-a.service", "rb-b.service")
	dir := t.TempDir()
	sd := dir + "/s"
	ctx := context.Background()
	if o, err := m.Systemctl(ctx, "start", "rb-b.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	r := run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "create", "-p", "systemd", "--tag", "base")
	wantCode(t, r, 0, "snapshot create")
	usage := func() int64 {
		var n int64
		filepath.Walk(sd+"/snapshots", func(_ string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				n += fi.Size()
			}
			return nil
		})
		return n
	}
	before := usage()
	r = run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "create", "-p", "systemd")
	wantCode(t, r, 0, "second snapshot")
	if added := usage() - before; added > 1024 {
		t.Errorf("an unchanged second snapshot added %d bytes; want only a small manifest", added)
	}

	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"rb-a.service":{"active_state":"active"},"rb-b.service":{"active_state":"inactive"}}}}}`)
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", doc), 0, "apply")
	r = run(t, env, "", "--user", "--state-dir="+sd, "rollback", "--yes")
	wantCode(t, r, 0, "rollback")
	if got := oracle(t, m, "is-active", "rb-a.service"); got != "inactive" {
		t.Errorf("rb-a %s after rollback", got)
	}
	if got := oracle(t, m, "is-active", "rb-b.service"); got != "active" {
		t.Errorf("rb-b %s after rollback", got)
	}

	// Drift, then restore the tagged snapshot.
	if o, err := m.Systemctl(ctx, "stop", "rb-b.service"); err != nil {
		t.Fatalf("%v %s", err, o)
	}
	r = run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "restore", "base", "--dry-run")
	wantCode(t, r, 0, "restore dry run")
	if !strings.Contains(r.stdout, "start rb-b.service") {
		t.Errorf("restore plan:\n%s", r.stdout)
	}
	r = run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "restore", "base", "--yes")
	wantCode(t, r, 0, "restore")
	if got := oracle(t, m, "is-active", "rb-b.service"); got != "active" {
		t.Errorf("rb-b %s after restore", got)
	}
	r = run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "show", "nope-not-there")
	wantCode(t, r, 1, "unknown snapshot")
	if !strings.Contains(r.stderr, "no such snapshot") {
		t.Errorf("unknown snapshot error: %s", r.stderr)
	}
	r = run(t, env, "", "--user", "--state-dir="+sd, "snapshot", "list", "-o", "json")
	wantCode(t, r, 0, "list")
	var list []struct {
		ID, Reason, Tag string
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) < 4 {
		t.Fatalf("snapshot list: %v %s", err, r.stdout)
	}
}

func TestTestbedCorruptJournalRefusesApply(t *testing.T) {
	m, env := userBed(t, "cj-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	if err := os.MkdirAll(sd, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sd, "journal.json"), []byte("{\"version\": 1, \"id\": "), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"cj-a.service":{"active_state":"active"}}}}}`)
	r := run(t, env, "", "--user", "--state-dir="+sd, "apply", "--yes", doc)
	wantCode(t, r, 1, "apply with a corrupt journal")
	if !strings.Contains(r.stderr, "corrupt journal") {
		t.Errorf("error: %s", r.stderr)
	}
	if got := oracle(t, m, "is-active", "cj-a.service"); got != "inactive" {
		t.Errorf("apply went ahead despite the corrupt journal")
	}
}
