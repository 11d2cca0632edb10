package journallog

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// Outside systemd (no JOURNAL_STREAM) every line goes to stderr as
// "op-dbus: MESSAGE", fields and priority left out.
func TestStderrOutsideSystemd(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	os.Unsetenv("JOURNAL_STREAM")
	if New("op-dbus", "op-dbus: ", os.Stderr).Journal() {
		t.Fatal("journal chosen without JOURNAL_STREAM")
	}
	var b bytes.Buffer
	l := New("op-dbus", "op-dbus: ", &b)
	l.Printf("serving %s in %s mode", "/etc/op-dbus/state.json", "enforce")
	l.Log(Warning, Plugin("systemd"), "drift: %s: %s", "systemd", `units["x.service"].active_state desired "active", current "inactive"`)
	l.Log(Err, Plugin("systemd").With(FieldTxn, "abc").With(FieldAuditSeq, "7"), "enforce: systemd: correction failed (1 in a row): boom")
	want := "op-dbus: serving /etc/op-dbus/state.json in enforce mode\n" +
		"op-dbus: drift: systemd: units[\"x.service\"].active_state desired \"active\", current \"inactive\"\n" +
		"op-dbus: enforce: systemd: correction failed (1 in a row): boom\n"
	if b.String() != want {
		t.Fatalf("stderr:\n%s\nwant:\n%s", b.String(), want)
	}
}

// A JOURNAL_STREAM naming another file than stderr is not the journal
// (sd_journal's rule: a child's stderr was redirected).
func TestJournalStreamOfAnotherFile(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:1")
	if New("op-dbus", "op-dbus: ", os.Stderr).Journal() {
		t.Fatal("journal chosen though JOURNAL_STREAM does not name stderr")
	}
}

// In journal mode an entry carries its fields, priority and identifier;
// MESSAGE is the stderr line's text. A refused entry falls back to stderr.
func TestJournalEntry(t *testing.T) {
	var b bytes.Buffer
	var got []map[string]string
	var pris []Priority
	var msgs []string
	fail := false
	l := &Logger{prefix: "op-dbus: ", ident: "op-dbus", w: &b, send: func(msg string, p Priority, f map[string]string) error {
		if fail {
			return errors.New("no journal")
		}
		got, pris, msgs = append(got, f), append(pris, p), append(msgs, msg)
		return nil
	}}
	l.Log(Info, Plugin("systemd").With(FieldOp, "systemd/start/x.service").With(FieldTxn, "t1").With(FieldAuditSeq, ""), "enforce: %s: corrected %d op", "systemd", 1)
	if b.Len() != 0 {
		t.Fatalf("stderr got %q in journal mode", b.String())
	}
	if msgs[0] != "enforce: systemd: corrected 1 op" || pris[0] != Info {
		t.Fatalf("message %q priority %d", msgs[0], pris[0])
	}
	f := got[0]
	if f["PLUGIN"] != "systemd" || f["OP"] != "systemd/start/x.service" || f["TXN"] != "t1" || f["SYSLOG_IDENTIFIER"] != "op-dbus" {
		t.Fatalf("fields %v", f)
	}
	if _, ok := f["AUDIT_SEQ"]; ok {
		t.Fatalf("empty AUDIT_SEQ sent: %v", f)
	}
	fail = true
	l.Log(Err, nil, "audit log: %s", "damaged")
	if b.String() != "op-dbus: audit log: damaged\n" {
		t.Fatalf("fallback %q", b.String())
	}
}
