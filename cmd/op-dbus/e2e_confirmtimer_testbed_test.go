package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/confirmtimer"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// An MCP client applies two units under the confirm timer, then the MCP
// server dies (SIGKILL). The systemd timer armed for the deadline rolls
// both units back by themselves, and the audit log's recovery names the
// MCP client that made the change.
func TestTestbedConfirmDeadlineOutlivesMCPServer(t *testing.T) {
	m, env := userBed(t, "mk-a.service", "mk-b.service")
	sd := filepath.Join(t.TempDir(), "state")
	cmd := exec.Command(binary, "--user", "--state-dir="+sd, "mcp", "--allow-apply", "--confirm-within", "5s")
	cmd.Env = append(os.Environ(), env...)
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	lines := bufio.NewScanner(outp)
	lines.Buffer(nil, 16<<20)
	call := func(id int, method string, params any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
		if _, err := in.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
		for lines.Scan() {
			var msg map[string]any
			if json.Unmarshal(lines.Bytes(), &msg) == nil && msg["id"] == float64(id) {
				return msg
			}
		}
		t.Fatalf("no answer to %s: %v\n%s", method, lines.Err(), stderr.String())
		return nil
	}
	call(1, "initialize", map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{},
		"clientInfo": map[string]any{"name": "killed-agent", "version": "1.0"}})
	_, _ = io.WriteString(in, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n")
	doc := map[string]any{"version": 1, "plugins": map[string]any{"systemd": map[string]any{"units": map[string]any{
		"mk-a.service": map[string]any{"active_state": "active"}, "mk-b.service": map[string]any{"active_state": "active"}}}}}
	plan := call(2, "tools/call", map[string]any{"name": "plan", "arguments": map[string]any{"document": doc}})
	hash, _ := plan["result"].(map[string]any)["structuredContent"].(map[string]any)["plan_hash"].(string)
	if hash == "" {
		t.Fatalf("plan: %v", plan)
	}
	applied := call(3, "tools/call", map[string]any{"name": "apply", "arguments": map[string]any{"plan_hash": hash}})
	if b, _ := json.Marshal(applied); !strings.Contains(string(b), `"awaiting_confirm":true`) {
		t.Fatalf("apply: %s\n%s", b, stderr.String())
	}
	for _, u := range []string{"mk-a.service", "mk-b.service"} {
		if got := oracle(t, m, "is-active", u); got != "active" {
			t.Fatalf("%s is %s after the apply", u, got)
		}
	}
	j, err := txn.ReadJournal(sd)
	if err != nil || j == nil {
		t.Fatalf("journal while waiting: %v", err)
	}
	timerUnit, _ := confirmtimer.Units(j.ID)
	if got := busctlUser(t, m.BusAddress, timerUnit); got != "active" {
		t.Fatalf("timer %s is %q while the transaction waits", timerUnit, got)
	}

	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
	// Nobody else runs op-dbus: the host's timer alone must act.
	for _, u := range []string{"mk-a.service", "mk-b.service"} {
		for oracle(t, m, "is-active", u) != "inactive" {
			if time.Now().After(j.Deadline.Add(30 * time.Second)) {
				b, _ := os.ReadFile(filepath.Join(m.Dir, "manager.log"))
				t.Fatalf("%s still %s 30 s after the deadline; manager log:\n%s", u, oracle(t, m, "is-active", u), b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if time.Now().Before(j.Deadline) {
		t.Errorf("rolled back before the deadline")
	}
	r := run(t, env, "", "--state-dir="+sd, "audit", "log", "-o", "json")
	wantCode(t, r, 0, "audit log")
	var es []struct {
		Kind    string            `json:"kind"`
		Result  string            `json:"result"`
		Message string            `json:"message"`
		Extra   map[string]string `json:"extra"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &es); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range es {
		if e.Kind == "recovery" && e.Result == "recovered" {
			found = true
			if e.Extra["started_by"] != "mcp" || !strings.Contains(e.Extra["started_for"], "killed-agent") || !strings.Contains(e.Message, "killed-agent") {
				t.Errorf("the recovery does not name the MCP client: %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("no recovery in the audit log:\n%s", r.stdout)
	}
}

// The timer exists while an apply waits and is gone once it is committed.
func TestTestbedConfirmTimerGoneAfterCommit(t *testing.T) {
	m, env := userBed(t, "cm-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"cm-a.service":{"active_state":"active"}}}}}`)
	cmd, out := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", "--confirm-within", "60s", doc)
	waitPhase(t, sd, "awaiting-confirm")
	j, err := txn.ReadJournal(sd)
	if err != nil || j == nil {
		t.Fatalf("journal: %v", err)
	}
	timerUnit, _ := confirmtimer.Units(j.ID)
	if got := busctlUser(t, m.BusAddress, timerUnit); got != "active" {
		t.Fatalf("timer %s is %q while the apply waits", timerUnit, got)
	}
	wantCode(t, run(t, env, "", "--user", "--state-dir="+sd, "commit"), 0, "commit")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("apply after commit: %v\n%s", err, out)
	}
	if got := busctlUser(t, m.BusAddress, timerUnit); got != "inactive" && got != "" {
		t.Errorf("timer %s is %q after the commit, want gone", timerUnit, got)
	}
	if got := oracle(t, m, "is-active", "cm-a.service"); got != "active" {
		t.Errorf("cm-a.service %s after the commit", got)
	}
}

// Without a systemd manager to keep the deadline, --confirm-within is
// refused before anything changes, unless --confirm-in-process is given.
func TestTestbedConfirmWithinNeedsSystemd(t *testing.T) {
	b, env := identityBed(t)
	dir := t.TempDir()
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"hostname":{"location":"needs-a-timer"}}}`)
	before := busProp(t, b, "org.freedesktop.hostname1", "Location")
	r := run(t, env, "", "--state-dir="+dir+"/s", "apply", "--yes", "--confirm-within", "2s", doc)
	wantCode(t, r, 1, "apply --confirm-within without systemd")
	if !strings.Contains(r.stderr, "--confirm-in-process") {
		t.Errorf("the refusal does not say how to go on: %s", r.stderr)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Fatalf("a refused apply changed Location: %s -> %s", before, got)
	}
	r = run(t, env, "", "--state-dir="+dir+"/s", "--confirm-in-process", "apply", "--yes", "--confirm-within", "1s", doc)
	wantCode(t, r, 1, "apply --confirm-in-process, not confirmed")
	if !strings.Contains(r.stdout, "rolled back") {
		t.Errorf("in-process deadline: %s", r)
	}
	if got := busProp(t, b, "org.freedesktop.hostname1", "Location"); got != before {
		t.Errorf("Location after the unconfirmed apply: %s, want %s", got, before)
	}
}

// busctlUser is the timer's ActiveState on the user manager, "" when the
// unit is not loaded.
func busctlUser(t *testing.T, addr, unit string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "busctl", "--address="+addr, "--json=short", "call", "org.freedesktop.systemd1",
		"/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", "GetUnit", "s", unit).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not loaded") {
			return ""
		}
		t.Fatalf("busctl GetUnit %s: %v %s", unit, err, out)
	}
	var path struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(out, &path); err != nil || len(path.Data) != 1 {
		t.Fatalf("GetUnit %s: %v %s", unit, err, out)
	}
	out, err = exec.CommandContext(ctx, "busctl", "--address="+addr, "--json=short", "get-property", "org.freedesktop.systemd1",
		path.Data[0], "org.freedesktop.systemd1.Unit", "ActiveState").CombinedOutput()
	if err != nil {
		t.Fatalf("busctl ActiveState %s: %v %s", unit, err, out)
	}
	var st struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(fmt.Errorf("%w: %s", err, out))
	}
	return st.Data
}

// A process that holds the lock past its deadline (hung: SIGSTOP) does not
// use the timer up: its `recover --if-deadline-passed` exits 75 and
// systemd runs it again, so once the hung process dies the change is still
// rolled back without anyone running op-dbus.
func TestTestbedConfirmTimerRetriesWhileOwnerHangs(t *testing.T) {
	m, env := userBed(t, "hang-a.service")
	dir := t.TempDir()
	sd := dir + "/s"
	doc := writeFile(t, dir, "d.json", `{"version":1,"plugins":{"systemd":{"units":{"hang-a.service":{"active_state":"active"}}}}}`)
	cmd, _ := startApply(t, env, "--user", "--state-dir="+sd, "apply", "--yes", "--confirm-within", "3s", doc)
	waitPhase(t, sd, "awaiting-confirm")
	j, err := txn.ReadJournal(sd)
	if err != nil || j == nil {
		t.Fatalf("journal: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGSTOP)
	_, serviceUnit := confirmtimer.Units(j.ID)
	// Past the deadline the hung owner still holds the lock: the service
	// waits to run again instead of ending.
	time.Sleep(time.Until(j.Deadline.Add(2 * time.Second)))
	for busctlUser(t, m.BusAddress, serviceUnit) != "activating" {
		if time.Now().After(j.Deadline.Add(20 * time.Second)) {
			t.Fatalf("%s is %q while the owner hangs, want activating (auto-restart)", serviceUnit, busctlUser(t, m.BusAddress, serviceUnit))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := oracle(t, m, "is-active", "hang-a.service"); got != "active" {
		t.Fatalf("hang-a.service %s while its transaction's owner holds the lock", got)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_, _ = cmd.Process.Wait()
	for oracle(t, m, "is-active", "hang-a.service") != "inactive" {
		if time.Now().After(j.Deadline.Add(60 * time.Second)) {
			t.Fatalf("hang-a.service still %s after its hung owner died", oracle(t, m, "is-active", "hang-a.service"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
