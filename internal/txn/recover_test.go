package txn

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/op-dbus/op-dbus/internal/engine"
)

type records []Record

func (r *records) Record(rec Record) error { *r = append(*r, rec); return nil }

// The recovery record names the front end and actor that started the
// interrupted transaction, when its journal says.
func TestRecoverNamesStarter(t *testing.T) {
	for _, tc := range []struct{ source, client, want string }{
		{"mcp", "agent-7", "(awaiting-confirm, started by mcp agent-7) interrupted"},
		{"cli", "", "(awaiting-confirm, started by cli) interrupted"},
		{"", "", "(awaiting-confirm) interrupted"},
	} {
		dir := t.TempDir()
		j := &Journal{Version: 1, ID: "abc123", PID: 1 << 30, Started: time.Now().UTC(), Phase: PhaseAwaitingConfirm,
			Deadline: time.Now().UTC(), PreState: map[string]json.RawMessage{}, Items: map[string][]string{},
			Source: tc.source, Client: tc.client}
		if err := writeJournal(dir, j); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJournal(dir)
		if err != nil || back.Source != tc.source || back.Client != tc.client {
			t.Fatalf("journal read back: %+v %v", back, err)
		}
		var recs records
		m := &Manager{Dir: dir, Engine: engine.New(nil), Recorder: &recs}
		if _, err := m.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].Kind != "recovery" || recs[0].Result != "recovered" || !strings.Contains(recs[0].Message, tc.want) {
			t.Errorf("source %q client %q: records %+v", tc.source, tc.client, recs)
		}
		if j, err := ReadJournal(dir); j != nil || err != nil {
			t.Errorf("journal left: %+v %v", j, err)
		}
	}
}
