package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/confirmtimer"
	"github.com/op-dbus/op-dbus/internal/dbusx"
	"github.com/op-dbus/op-dbus/internal/txn"
)

type recoverOut struct {
	Action      string `json:"action"`
	Reason      string `json:"reason"`
	Message     string `json:"message"`
	Transaction string `json:"transaction"`
	Rollback    *struct {
		Outcomes []json.RawMessage `json:"outcomes"`
		Verify   struct {
			OK bool `json:"ok"`
		} `json:"verify"`
	} `json:"rollback"`
}

func recoverJSON(t *testing.T, env []string, args ...string) recoverOut {
	t.Helper()
	r := run(t, env, "", append(args, "-o", "json")...)
	wantCode(t, r, 0, "recover")
	var o recoverOut
	if err := json.Unmarshal([]byte(r.stdout), &o); err != nil {
		t.Fatalf("recover -o json: %v\n%s", err, r)
	}
	return o
}

// The whole mechanism: an apply waiting for confirmation is killed; the
// transient timer the apply armed for its deadline runs `op-dbus recover
// --if-deadline-passed` from the bed's systemd, which rolls it back.
func TestTestbedConfirmTimerRecoversKilledApply(t *testing.T) {
	m, env := userBed(t, "ct-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"ct-a.service":{"active_state":"active"}}}}}`)
	cmd, _ := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", "--confirm-within", "6s", doc)
	waitPhase(t, sd, "awaiting-confirm")
	j, err := txn.ReadJournal(sd)
	if err != nil || j == nil {
		t.Fatalf("journal: %v", err)
	}

	// While the apply lives, it owns its deadline.
	if o := recoverJSON(t, env, "--user", "--state-dir="+sd, "recover", "--if-deadline-passed"); o.Action != "none" || o.Reason != "owner-alive" {
		t.Errorf("recover while the apply lives: %+v", o)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
	if o := recoverJSON(t, env, "--user", "--state-dir="+sd, "recover", "--if-deadline-passed"); o.Action != "none" || o.Reason != "deadline-not-passed" || o.Transaction != j.ID {
		t.Errorf("recover before the deadline: %+v", o)
	}
	if got := oracle(t, m, "is-active", "ct-a.service"); got != "active" {
		t.Fatalf("unit %s before the deadline", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := dbusx.Open(ctx, dbusx.Bus(m.BusAddress))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := confirmtimer.Available(ctx, conn); err != nil {
		t.Fatal(err)
	}
	// The apply armed the timer when it started to wait; it outlives it.
	timerUnit, serviceUnit := confirmtimer.Units(j.ID)
	if got := oracle(t, m, "is-active", timerUnit); got != "active" {
		t.Errorf("timer %s after the apply was killed, want active", got)
	}

	for {
		_, err := os.Stat(filepath.Join(sd, "journal.json"))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(j.Deadline.Add(30 * time.Second)) {
			b, _ := os.ReadFile(filepath.Join(m.Dir, "manager.log"))
			t.Fatalf("the timer did not roll the transaction back; manager log:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The service ends (and is collected) once recover has exited 0.
	for oracle(t, m, "is-active", serviceUnit) != "inactive" {
		if time.Now().After(j.Deadline.Add(60 * time.Second)) {
			t.Fatalf("%s still %s", serviceUnit, oracle(t, m, "is-active", serviceUnit))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := oracle(t, m, "is-failed", serviceUnit); got == "failed" {
		t.Errorf("%s failed", serviceUnit)
	}
	if time.Now().Before(j.Deadline) {
		t.Errorf("rolled back before the deadline")
	}
	if got := oracle(t, m, "is-active", "ct-a.service"); got != "inactive" {
		t.Errorf("unit %s after the timer's recovery", got)
	}
	r := run(t, env, "", "--state-dir="+sd, "history", "-o", "json")
	if !strings.Contains(r.stdout, `"recovery"`) || !strings.Contains(r.stdout, j.ID) {
		t.Errorf("no recovery of %s in the audit log:\n%s", j.ID, r)
	}
	if err := confirmtimer.Disarm(ctx, conn, j.ID); err != nil {
		t.Errorf("disarm after the recovery: %v", err)
	}
}

// recover without a live owner: --if-deadline-passed leaves a transaction
// that was still applying alone; plain recover rolls it back.
func TestTestbedRecoverCommand(t *testing.T) {
	_, env := userBed(t)
	sd := filepath.Join(t.TempDir(), "s")
	if o := recoverJSON(t, env, "--user", "--state-dir="+sd, "recover"); o.Action != "none" || o.Reason != "no-journal" {
		t.Errorf("empty state dir: %+v", o)
	}
	if _, err := os.Stat(sd); !os.IsNotExist(err) {
		t.Errorf("recover created the state dir: %v", err)
	}
	if err := os.MkdirAll(sd, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, sd, "journal.json", `{"version":1,"id":"dead0001","pid":999999999,"started":"2026-01-01T00:00:00Z","phase":"applying",
"document_hash":"sha256:x","pre_state":{"systemd":{"units":{}}},"items":{"systemd":[]},"ops":0,"source":"mcp","client":"agent-7"}`)
	if o := recoverJSON(t, env, "--user", "--state-dir="+sd, "recover", "--if-deadline-passed"); o.Action != "none" || o.Reason != "not-awaiting-confirm" {
		t.Errorf("applying journal with --if-deadline-passed: %+v", o)
	}
	r := run(t, env, "", "--user", "--state-dir="+sd, "recover")
	wantCode(t, r, 0, "recover")
	if !strings.Contains(r.stdout, "Rolled back transaction dead0001") {
		t.Errorf("recover output:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(sd, "journal.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after recover")
	}
	r = run(t, env, "", "--state-dir="+sd, "history", "-o", "json")
	if !strings.Contains(r.stdout, "started by mcp agent-7") {
		t.Errorf("the recovery record does not name who started the transaction:\n%s", r)
	}
}
