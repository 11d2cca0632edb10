package ledger

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// uncommittedRecord returns a valid framed record for entry seq, as an
// interrupted append would have written it.
func uncommittedRecord(t *testing.T, seq uint64) []byte {
	body, err := encodeBody(testEntry(int(seq)))
	if err != nil {
		t.Fatal(err)
	}
	payload := append([]byte(fmt.Sprintf(`{"seq":%d`, seq)), body...)
	return appendRecord(nil, payload)
}

func appendBytes(t *testing.T, p string, b []byte) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// interruptedAppend leaves in dir what an append killed while writing its
// checkpoint leaves: the next entry's record and index record in full, and
// ck(the checkpoint record it was writing). The bytes are those a real
// append of testEntry(size) produces.
func interruptedAppend(t *testing.T, dir string, ck func([]byte) []byte) {
	t.Helper()
	scratch := copyDir(t, dir)
	l := openT(t, scratch)
	if _, err := l.Append(testEntry(int(l.Size()))); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for _, f := range []string{"entries", "index", "checkpoints"} {
		old := readFile(t, filepath.Join(dir, f))
		tail := readFile(t, filepath.Join(scratch, f))[len(old):]
		if f == "checkpoints" {
			tail = ck(tail)
		}
		appendBytes(t, filepath.Join(dir, f), tail)
	}
}

func TestCrashRepair(t *testing.T) {
	const n = 300 // crosses a 256-entry tile
	src := buildLog(t, n)
	cases := []struct {
		name     string
		damage   func(t *testing.T, dir string)
		wantSize uint64
	}{
		{"torn record", func(t *testing.T, dir string) {
			rec := uncommittedRecord(t, n)
			appendBytes(t, filepath.Join(dir, "entries"), rec[:len(rec)/2])
		}, n},
		{"torn header", func(t *testing.T, dir string) {
			appendBytes(t, filepath.Join(dir, "entries"), uncommittedRecord(t, n)[:5])
		}, n},
		{"garbage", func(t *testing.T, dir string) {
			appendBytes(t, filepath.Join(dir, "entries"), []byte("\x00\x00\x01\x00garbage that is not a record"))
		}, n},
		{"zeros", func(t *testing.T, dir string) {
			appendBytes(t, filepath.Join(dir, "entries"), make([]byte, 4096))
		}, n},
		{"records and index without checkpoint", func(t *testing.T, dir string) {
			data := readFile(t, filepath.Join(dir, "entries"))
			recs := append(uncommittedRecord(t, n), uncommittedRecord(t, n+1)...)
			appendBytes(t, filepath.Join(dir, "entries"), recs)
			idx := make([]byte, indexRecSize+7) // one full and one torn index record
			idx[7] = byte(len(data))
			appendBytes(t, filepath.Join(dir, "index"), idx)
		}, n},
		{"torn checkpoint", func(t *testing.T, dir string) {
			// The next append wrote its entry and index record and half
			// its checkpoint.
			interruptedAppend(t, dir, func(ck []byte) []byte { return ck[:ckRecSize/2] })
		}, n},
		{"zero-filled checkpoint", func(t *testing.T, dir string) {
			// Power loss after the checkpoints file was extended but
			// before its data reached the disk.
			interruptedAppend(t, dir, func(ck []byte) []byte { return make([]byte, ckRecSize) })
		}, n},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, src)
			before := map[string][]byte{}
			for _, f := range fileNames {
				before[f] = readFile(t, filepath.Join(dir, f))
			}
			c.damage(t, dir)
			l := openT(t, dir)
			defer l.Close()
			if len(l.Repairs()) == 0 {
				t.Fatal("damage was not reported")
			}
			t.Logf("repairs: %s", strings.Join(l.Repairs(), "; "))
			if l.Corrupt() != nil {
				t.Fatalf("corrupt: %v", l.Corrupt())
			}
			if l.Size() != c.wantSize {
				t.Fatalf("size %d, want %d", l.Size(), c.wantSize)
			}
			rep := mustVerify(t, l)
			if len(rep.Repairs) == 0 {
				t.Error("verify report does not mention the repair")
			}
			kept, _ := os.ReadDir(filepath.Join(dir, dirRepairs))
			if len(kept) == 0 {
				t.Error("removed bytes were not kept")
			}
			if c.wantSize == n {
				for _, f := range fileNames {
					if !bytes.Equal(readFile(t, filepath.Join(dir, f)), before[f]) {
						t.Errorf("%s differs from before the crash", f)
					}
				}
			}
			// The log carries on.
			seq, err := l.Append(testEntry(1000))
			if err != nil || seq != c.wantSize {
				t.Fatalf("append after repair: %d %v", seq, err)
			}
			mustVerify(t, l)
			l.Close()
			l2 := openT(t, dir)
			defer l2.Close()
			if len(l2.Repairs()) != 0 {
				t.Fatalf("second open repaired again: %v", l2.Repairs())
			}
		})
	}
}

// TestKill9 kills a process that appends in a loop, several times, and
// checks that every acknowledged entry survives and the log verifies.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := filepath.Join(t.TempDir(), "audit")
	var acked int64 = -1
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		target := 20 + rnd.IntN(30)
		for i := 0; i < target && sc.Scan(); i++ {
			var s int64
			if _, err := fmt.Sscanf(sc.Text(), "ack %d", &s); err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			if s <= acked {
				t.Fatalf("ack %d after %d", s, acked)
			}
			acked = s
		}
		time.Sleep(time.Duration(rnd.IntN(2000)) * time.Microsecond)
		cmd.Process.Kill() // SIGKILL
		for sc.Scan() {    // acks printed before the kill landed
			fmt.Sscanf(sc.Text(), "ack %d", &acked)
		}
		cmd.Wait()
		if acked < 0 {
			t.Fatalf("child acknowledged nothing: %s", stderr.String())
		}

		l := openT(t, dir)
		if l.Size() < uint64(acked+1) {
			t.Fatalf("round %d: size %d but entry %d was acknowledged", round, l.Size(), acked)
		}
		if _, err := l.Get(uint64(acked)); err != nil {
			t.Fatal(err)
		}
		mustVerify(t, l)
		t.Logf("round %d: acked %d, size %d, repairs %v", round, acked, l.Size(), l.Repairs())
		l.Close()
	}
}
