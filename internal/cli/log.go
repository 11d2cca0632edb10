package cli

import "github.com/op-dbus/op-dbus/internal/journallog"

// logger is where the CLI's one-line notices for people go: the journal
// (with fields) when stderr is the journal's stream, else stderr as
// "op-dbus: ..." lines.
func (g *globals) logger() *journallog.Logger {
	return journallog.New("op-dbus", "op-dbus: ", g.stderr)
}
