package txn

import (
	"fmt"
	"strings"

	"github.com/op-dbus/op-dbus/internal/snapshot"
)

// noteDamage records the snapshot manifests that cannot be read. They do
// not stop a transaction (its own pre-apply snapshot was just written
// whole, and retention skips them), but they are recorded on every
// snapshot taken until a person removes them with `op-dbus snapshot prune
// --corrupt`.
func (m *Manager) noteDamage() error {
	dmg, err := m.Snapshots.Damaged()
	if err != nil || len(dmg) == 0 {
		return err
	}
	msgs := make([]string, 0, len(dmg))
	for _, d := range dmg {
		m.logf("warning: %v", d)
		msgs = append(msgs, d.Error())
	}
	return m.record(Record{Kind: "snapshot-damage", Result: "skipped",
		Message: fmt.Sprintf("%d damaged snapshot %s skipped: %s", len(dmg), plural(len(dmg), "manifest", "manifests"), strings.Join(msgs, "; "))})
}

// PruneCorrupt removes the snapshot manifests that cannot be read, and the
// blobs only they named, recording one "snapshot-prune" entry per removed
// manifest. With dryRun it only returns them.
func (m *Manager) PruneCorrupt(dryRun bool) ([]snapshot.Damaged, error) {
	if dryRun {
		return m.Snapshots.Damaged()
	}
	removed, err := m.Snapshots.PruneDamaged()
	for _, d := range removed {
		if rerr := m.record(Record{Kind: "snapshot-prune", Result: "success",
			Message: fmt.Sprintf("removed damaged snapshot manifest %s (%s; %d bytes)", d.Path, d.Reason, d.Size)}); rerr != nil {
			return removed, rerr
		}
	}
	return removed, err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
