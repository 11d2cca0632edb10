package ledger

import (
	"fmt"
	"os"
	"testing"
)

const childEnv = "OPDBUS_LEDGER_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	code := m.Run()
	cleanupBench()
	os.Exit(code)
}

// crashChild appends until killed, printing each acknowledged sequence
// number.
func crashChild(dir string) int {
	l, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; ; i++ {
		var seqs []uint64
		if i%3 == 2 {
			seqs, err = l.AppendBatch([]Entry{testEntry(i), testEntry(i + 1), testEntry(i + 2)})
		} else {
			var s uint64
			s, err = l.Append(testEntry(i))
			seqs = []uint64{s}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintf(os.Stdout, "ack %d\n", seqs[len(seqs)-1])
	}
}
