package daemon

import (
	"encoding/json"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/op-dbus/op-dbus/internal/ledger"
	"github.com/op-dbus/op-dbus/internal/txn"
)

// recorder writes the daemon's transactions (kind "correction") to the
// audit log with source "daemon".
type recorder struct{ log *ledger.Log }

func (r *recorder) Record(rec txn.Record) error {
	e := ledger.Entry{Time: time.Now().UTC(), Kind: rec.Kind, Source: "daemon", Actor: actor(),
		Plugins: rec.Plugins, Before: rec.Before, After: rec.After, Document: rec.Document,
		Verified: rec.Verified, Result: rec.Result, Message: rec.Message}
	for _, o := range rec.Outcomes {
		e.Ops = append(e.Ops, ledger.OpRecord{ID: o.Op.ID, Plugin: o.Op.Plugin, Description: o.Op.Description, Status: string(o.Status), Error: o.Error, Data: o.Op.Data})
	}
	for _, o := range rec.Undo {
		e.Ops = append(e.Ops, ledger.OpRecord{ID: o.Op.ID, Plugin: o.Op.Plugin, Description: "undo " + o.Op.Description, Status: string(o.Status), Error: o.Error, Data: o.Op.Data})
	}
	if rec.Snapshot != "" {
		e.Extra, _ = json.Marshal(map[string]string{"snapshot": rec.Snapshot})
	}
	_, err := r.log.Append(e)
	return err
}

func actor() ledger.Actor {
	a := ledger.Actor{UID: os.Getuid(), Client: "op-dbus serve"}
	if u, err := user.LookupId(strconv.Itoa(a.UID)); err == nil {
		a.User = u.Username
	}
	return a
}
