// Package journallog holds op-dbus's logger for people: one line per
// message, with structured fields. Under systemd, when stderr is the
// journal's stream (JOURNAL_STREAM names stderr's device and inode, the
// rule of sd_journal), entries go to the journal by its native protocol
// with their fields (PLUGIN=, OP=, TXN=, AUDIT_SEQ=) and a priority, so
// `journalctl -u op-dbus PLUGIN=network` finds them. Everywhere else the
// line goes to stderr as "op-dbus: MESSAGE", fields left out.
package journallog

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Priority is a syslog priority.
type Priority int

// Priorities op-dbus uses: errors, drift (and back-off), everything else.
const (
	Err     = Priority(journal.PriErr)
	Warning = Priority(journal.PriWarning)
	Info    = Priority(journal.PriInfo)
)

// Field names.
const (
	FieldPlugin   = "PLUGIN"    // the plugin a line is about
	FieldOp       = "OP"        // an op's ID, e.g. systemd/start/nginx.service
	FieldTxn      = "TXN"       // the transaction's journal ID
	FieldAuditSeq = "AUDIT_SEQ" // the sequence number of its audit entry
)

// Fields are journal fields (upper-case names) of one entry.
type Fields map[string]string

// Plugin returns Fields with PLUGIN=name.
func Plugin(name string) Fields { return Fields{FieldPlugin: name} }

// With returns a copy of f with name=value added (value "" adds nothing).
func (f Fields) With(name, value string) Fields {
	out := make(Fields, len(f)+1)
	for k, v := range f {
		out[k] = v
	}
	if value != "" {
		out[name] = value
	}
	return out
}

// Logger writes entries to the journal or to a writer.
type Logger struct {
	prefix string
	ident  string
	mu     sync.Mutex
	w      io.Writer
	// send, when set, writes to the journal.
	send func(msg string, p Priority, f map[string]string) error
}

// New returns a logger for a process whose stderr is w: to the journal
// when w is the process's stderr and that is the journal's stream, else
// to w as prefix+message lines. ident is SYSLOG_IDENTIFIER ("op-dbus").
func New(ident, prefix string, w io.Writer) *Logger {
	l := &Logger{prefix: prefix, ident: ident, w: w}
	if f, ok := w.(*os.File); ok && f == os.Stderr && journal.Enabled() {
		if yes, err := journal.StderrIsJournalStream(); err == nil && yes {
			l.send = func(msg string, p Priority, f map[string]string) error {
				return journal.Send(msg, journal.Priority(p), f)
			}
		}
	}
	return l
}

// Journal reports whether entries go to the journal.
func (l *Logger) Journal() bool { return l.send != nil }

// Printf logs an informational line without fields (the shape of every
// Options.Log of op-dbus).
func (l *Logger) Printf(format string, args ...any) { l.Log(Info, nil, format, args...) }

// Log writes one entry: MESSAGE is the formatted text, the same text the
// stderr line carries after its prefix.
func (l *Logger) Log(p Priority, f Fields, format string, args ...any) {
	if l == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if l.send != nil {
		vars := make(map[string]string, len(f)+1)
		for k, v := range f {
			if v != "" {
				vars[k] = v
			}
		}
		if l.ident != "" {
			vars["SYSLOG_IDENTIFIER"] = l.ident
		}
		if err := l.send(msg, p, vars); err == nil {
			return
		}
		// The journal refused it: the line is not lost, stderr (which
		// the journal also reads) gets it.
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s%s\n", l.prefix, msg)
}
