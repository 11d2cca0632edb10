package journallog_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/testbed"
)

const (
	servedUnit = "op-dbus-journal.service"
	targetUnit = "jrn-target.service"
)

// Under systemd, `op-dbus serve` logs to the journal with fields: in a
// booted Debian (systemd as PID 1, journald), a unit it enforces is
// stopped; the drift and the correction are found by
// `journalctl -u UNIT PLUGIN=systemd` with the correction's TXN= and
// AUDIT_SEQ=, and the op by `journalctl -u UNIT OP=systemd/start/X`.
func TestTestbedServeLogsToJournalWithFields(t *testing.T) {
	b := testbed.NewBootedHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	bin := filepath.Join(t.TempDir(), "op-dbus")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/op-dbus")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/op-dbus: %v\n%s", err, out)
	}
	dir := t.TempDir()
	files := map[string]string{
		"/etc/systemd/system/" + targetUnit: "[Service]\nExecStart=/bin/sleep infinity\n",
		"/etc/systemd/system/" + servedUnit: "[Service]\nExecStart=/usr/local/bin/op-dbus --state-dir /var/lib/op-dbus serve --state /etc/op-dbus/state.json --mode enforce --dbus none\n",
		"/etc/op-dbus/state.json":           `{"version":1,"plugins":{"systemd":{"units":{"` + targetUnit + `":{"active_state":"active"}}}}}`,
	}
	for path, body := range files {
		host := filepath.Join(dir, filepath.Base(path))
		if err := os.WriteFile(host, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.CopyIn(host, path); err != nil {
			t.Fatalf("copy %s: %v", path, err)
		}
	}
	if err := b.CopyIn(bin, "/usr/local/bin/op-dbus"); err != nil {
		t.Fatal(err)
	}
	in := func(argv ...string) string {
		t.Helper()
		out, err := b.Exec(ctx, argv...)
		if err != nil {
			t.Fatalf("%v in the booted host: %v\n%s", argv, err, out)
		}
		return strings.TrimSpace(out)
	}
	logs := func() string {
		out, _ := b.Exec(ctx, "journalctl", "-u", servedUnit, "--no-pager", "-o", "verbose", "-n", "60")
		return out
	}
	// entries returns the served unit's journal entries matching the
	// journalctl matches.
	entries := func(match ...string) []map[string]any {
		t.Helper()
		argv := append([]string{"journalctl", "-u", servedUnit, "--no-pager", "-o", "json"}, match...)
		out := in(argv...)
		var es []map[string]any
		for _, line := range strings.Split(out, "\n") {
			if strings.TrimSpace(line) == "" || !strings.HasPrefix(line, "{") {
				continue
			}
			var e map[string]any
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("journalctl -o json: %v: %s", err, line)
			}
			es = append(es, e)
		}
		return es
	}
	find := func(es []map[string]any, prefix string) map[string]any {
		for _, e := range es {
			if m, _ := e["MESSAGE"].(string); strings.HasPrefix(m, prefix) {
				return e
			}
		}
		return nil
	}
	wait := func(what string, fn func() bool) {
		t.Helper()
		for deadline := time.Now().Add(45 * time.Second); !fn(); time.Sleep(250 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 45s; the unit's journal:\n%s", what, logs())
			}
		}
	}

	in("chmod", "0755", "/usr/local/bin/op-dbus")
	in("systemctl", "daemon-reload")
	in("systemctl", "start", targetUnit)
	in("systemctl", "start", servedUnit)
	wait("serving line", func() bool { return find(entries(), "serving /etc/op-dbus/state.json") != nil })

	in("systemctl", "stop", targetUnit)
	var corrected map[string]any
	wait("correction in journalctl PLUGIN=systemd", func() bool {
		corrected = find(entries("PLUGIN=systemd"), "enforce: systemd: corrected 1 op")
		return corrected != nil
	})
	es := entries("PLUGIN=systemd")
	drift := find(es, "drift: systemd: ")
	if drift == nil {
		t.Fatalf("no drift line under PLUGIN=systemd:\n%s", logs())
	}
	if drift["PRIORITY"] != "4" {
		t.Errorf("drift PRIORITY = %v, want 4 (warning)", drift["PRIORITY"])
	}
	if corrected["PRIORITY"] != "6" || corrected["PLUGIN"] != "systemd" || corrected["_TRANSPORT"] != "journal" || corrected["SYSLOG_IDENTIFIER"] != "op-dbus" {
		t.Errorf("correction entry: PRIORITY %v PLUGIN %v _TRANSPORT %v SYSLOG_IDENTIFIER %v", corrected["PRIORITY"], corrected["PLUGIN"], corrected["_TRANSPORT"], corrected["SYSLOG_IDENTIFIER"])
	}
	txnID, _ := corrected["TXN"].(string)
	seq, _ := corrected["AUDIT_SEQ"].(string)
	if txnID == "" {
		t.Errorf("correction has no TXN: %v", corrected)
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		t.Errorf("correction AUDIT_SEQ = %q", seq)
	}

	opID := "systemd/start/" + targetUnit
	ops := entries("OP=" + opID)
	op := find(ops, "enforce: systemd: start "+targetUnit)
	if op == nil {
		t.Fatalf("journalctl OP=%s found no op line (%d entries):\n%s", opID, len(ops), logs())
	}
	if op["TXN"] != txnID || op["PLUGIN"] != "systemd" {
		t.Errorf("op entry TXN %v PLUGIN %v, want TXN %s PLUGIN systemd", op["TXN"], op["PLUGIN"], txnID)
	}
	t.Logf("PLUGIN=systemd: %q TXN=%s AUDIT_SEQ=%s PRIORITY=%v; %q PRIORITY=%v", corrected["MESSAGE"], txnID, seq, corrected["PRIORITY"], drift["MESSAGE"], drift["PRIORITY"])
	t.Logf("OP=%s: %q TXN=%v", opID, op["MESSAGE"], op["TXN"])
	if got := entries("TXN=" + txnID); len(got) < 2 {
		t.Errorf("journalctl TXN=%s: %d entries, want the op and the correction", txnID, len(got))
	}

	// The audit entry of that sequence number is the correction.
	audit := in("/usr/local/bin/op-dbus", "--state-dir", "/var/lib/op-dbus", "audit", "show", seq, "-o", "json")
	if !strings.Contains(audit, `"correction"`) {
		t.Errorf("audit entry %s is not the correction:\n%s", seq, audit)
	}
	// The native protocol carries the lines: none also came in on the
	// stderr stream as "op-dbus: ...".
	for _, e := range entries() {
		if m, _ := e["MESSAGE"].(string); strings.HasPrefix(m, "op-dbus: ") {
			t.Errorf("line on stderr under systemd (%v): %s", e["_TRANSPORT"], m)
		}
	}
	in("systemctl", "stop", servedUnit)
}
