package daemon

import (
	"github.com/op-dbus/op-dbus/internal/engine"
	"github.com/op-dbus/op-dbus/internal/journallog"
)

// logAt logs with a priority and journal fields through Options.Logger;
// without one, the line goes to Options.Log as it is.
func (d *Daemon) logAt(p journallog.Priority, f journallog.Fields, format string, args ...any) {
	if d.opts.Logger != nil {
		d.opts.Logger.Log(p, f, format, args...)
		return
	}
	d.opts.Log(format, args...)
}

// correctionLog follows one correction: its transaction ID (OnStart) and
// the end of each op (Events), logged with PLUGIN=, OP= and TXN=.
type correctionLog struct {
	d    *Daemon
	name string
	txn  string
}

func (c *correctionLog) start(id string) { c.txn = id }

func (c *correctionLog) fields() journallog.Fields {
	return journallog.Plugin(c.name).With(journallog.FieldTxn, c.txn)
}

func (c *correctionLog) event(ev engine.Event) {
	if !ev.Done || (ev.Phase != "apply" && ev.Phase != "rollback") {
		return
	}
	f := journallog.Plugin(ev.Op.Plugin).With(journallog.FieldOp, ev.Op.ID).With(journallog.FieldTxn, c.txn)
	what := ev.Op.Description
	if ev.Phase == "rollback" {
		what = "undo " + what
	}
	if ev.Err != nil {
		c.d.logAt(journallog.Err, f, "enforce: %s: %s (%d/%d) failed: %v", c.name, what, ev.Index, ev.Total, ev.Err)
		return
	}
	c.d.logAt(journallog.Info, f, "enforce: %s: %s (%d/%d) done in %s", c.name, what, ev.Index, ev.Total, ev.Duration.Round(1e6))
}
