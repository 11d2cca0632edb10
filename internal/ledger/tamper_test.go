package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const tamperN = 600

// verifyDamaged opens dir and verifies it, expecting failure.
func verifyDamaged(t *testing.T, dir string) VerifyReport {
	t.Helper()
	return verifyDamagedWith(t, dir, VerifyOptions{})
}

func verifyDamagedWith(t *testing.T, dir string, o VerifyOptions) VerifyReport {
	t.Helper()
	l, err := Open(dir)
	if err != nil {
		t.Fatalf("Open of a damaged log failed (it should open for verification): %v", err)
	}
	defer l.Close()
	if r := l.Repairs(); len(r) != 0 {
		t.Fatalf("damage was repaired instead of reported: %v", r)
	}
	rep, err := l.VerifyWith(o)
	if err == nil || rep.OK || !errors.Is(err, ErrVerify) {
		t.Fatalf("Verify passed a damaged log: %v %+v", err, rep)
	}
	if len(rep.Problems) == 0 {
		t.Fatal("no problems reported")
	}
	return rep
}

func wantFirstEntry(t *testing.T, rep VerifyReport, want uint64) {
	t.Helper()
	if rep.FirstBadEntry == nil || *rep.FirstBadEntry != want {
		var got any = nil
		if rep.FirstBadEntry != nil {
			got = *rep.FirstBadEntry
		}
		t.Fatalf("first bad entry %v, want %d; problems: %v", got, want, rep.Problems)
	}
}

func TestTamper(t *testing.T) {
	src := buildLog(t, tamperN)
	data := readFile(t, filepath.Join(src, "entries"))
	offs := recordOffsets(t, data)
	if len(offs) != tamperN {
		t.Fatalf("%d records", len(offs))
	}
	l := openT(t, src)
	mustVerify(t, l)
	l.Close()
	rec := func(i int) []byte {
		end := len(data)
		if i+1 < len(offs) {
			end = offs[i+1]
		}
		return data[offs[i]:end]
	}
	edit := func(dir, file string, f func([]byte) []byte) {
		p := filepath.Join(dir, file)
		writeFile(t, p, f(readFile(t, p)))
	}
	flip := func(dir, file string, off int) {
		edit(dir, file, func(b []byte) []byte { b[off] ^= 0x20; return b })
	}

	t.Run("flip payload byte", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "entries", offs[137]+recordHeaderSize+40)
		wantFirstEntry(t, verifyDamaged(t, dir), 137)
	})
	t.Run("flip length byte", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "entries", offs[137]+3)
		rep := verifyDamaged(t, dir)
		wantFirstEntry(t, rep, 137)
	})
	t.Run("flip length high byte", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "entries", offs[137])
		wantFirstEntry(t, verifyDamaged(t, dir), 137)
	})
	t.Run("flip checksum byte", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "entries", offs[137]+5)
		wantFirstEntry(t, verifyDamaged(t, dir), 137)
	})
	t.Run("flip last entry", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "entries", len(data)-3)
		l := openT(t, dir)
		if err := l.Corrupt(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "entry 599") {
			t.Fatalf("Corrupt() = %v", err)
		}
		if _, err := l.Append(testEntry(1)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("append to a corrupt log: %v", err)
		}
		if _, err := l.Get(10); err != nil {
			t.Fatalf("reading a corrupt log: %v", err)
		}
		l.Close()
		wantFirstEntry(t, verifyDamaged(t, dir), 599)
	})
	t.Run("delete entry", func(t *testing.T) {
		dir := copyDir(t, src)
		edit(dir, "entries", func(b []byte) []byte {
			return append(append([]byte(nil), b[:offs[137]]...), b[offs[138]:]...)
		})
		wantFirstEntry(t, verifyDamaged(t, dir), 137)
	})
	t.Run("reorder entries", func(t *testing.T) {
		dir := copyDir(t, src)
		edit(dir, "entries", func(b []byte) []byte {
			var out []byte
			out = append(out, b[:offs[137]]...)
			out = append(out, rec(400)...)
			out = append(out, b[offs[138]:offs[400]]...)
			out = append(out, rec(137)...)
			out = append(out, b[offs[401]:]...)
			return out
		})
		wantFirstEntry(t, verifyDamaged(t, dir), 137)
	})
	t.Run("reorder adjacent and renumber", func(t *testing.T) {
		// A careful attacker swaps two entries and fixes their seq and
		// checksums; the index then disagrees.
		dir := copyDir(t, src)
		edit(dir, "entries", func(b []byte) []byte {
			fix := func(r []byte, seq int) []byte {
				p := []byte(strings.Replace(string(r[recordHeaderSize:]), fmt.Sprintf(`{"seq":%d,`, 1-seq+2*200), fmt.Sprintf(`{"seq":%d,`, seq), 1))
				return appendRecord(nil, p)
			}
			var out []byte
			out = append(out, b[:offs[200]]...)
			out = append(out, fix(rec(201), 200)...)
			out = append(out, fix(rec(200), 201)...)
			out = append(out, b[offs[202]:]...)
			return out
		})
		wantFirstEntry(t, verifyDamaged(t, dir), 200)
	})
	t.Run("rewrite entry, checksum and index", func(t *testing.T) {
		// Only the signed checkpoints catch this one.
		dir := copyDir(t, src)
		var leaf []byte
		edit(dir, "entries", func(b []byte) []byte {
			p := []byte(strings.Replace(string(rec(300)[recordHeaderSize:]), `"result":"success"`, `"result":"failed!"`, 1))
			leaf = hasher.HashLeaf(p)
			copy(b[offs[300]:], appendRecord(nil, p))
			return b
		})
		edit(dir, "index", func(b []byte) []byte { copy(b[300*indexRecSize+8:], leaf); return b })
		rep := verifyDamaged(t, dir)
		wantFirstEntry(t, rep, 300)
		if rep.FirstBadCheckpoint == nil {
			t.Fatalf("no checkpoint named: %v", rep.Problems)
		}
	})
	t.Run("truncate mid-record", func(t *testing.T) {
		dir := copyDir(t, src)
		edit(dir, "entries", func(b []byte) []byte { return b[:offs[590]+20] })
		wantFirstEntry(t, verifyDamaged(t, dir), 590)
	})
	t.Run("truncate whole records", func(t *testing.T) {
		dir := copyDir(t, src)
		edit(dir, "entries", func(b []byte) []byte { return b[:offs[595]] })
		rep := verifyDamaged(t, dir)
		wantFirstEntry(t, rep, 595)
		if !strings.Contains(fmt.Sprint(rep.Problems), "missing") {
			t.Fatalf("problems %v", rep.Problems)
		}
	})
	t.Run("truncate everything", func(t *testing.T) {
		dir := copyDir(t, src)
		for _, f := range []string{"entries", "index", "tiles"} {
			edit(dir, f, func(b []byte) []byte { return nil })
		}
		wantFirstEntry(t, verifyDamaged(t, dir), 0)
	})
	t.Run("flip index offset", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "index", 200*indexRecSize+6)
		wantFirstEntry(t, verifyDamaged(t, dir), 200)
	})
	t.Run("flip index leaf hash", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "index", 200*indexRecSize+20)
		wantFirstEntry(t, verifyDamaged(t, dir), 200)
	})
	t.Run("flip tile", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "tiles", 40)
		rep := verifyDamaged(t, dir)
		if rep.Problems[0].File != "tiles" || !strings.Contains(rep.Problems[0].Message, "subtree 1") {
			t.Fatalf("problems %v", rep.Problems)
		}
	})
	t.Run("flip checkpoint", func(t *testing.T) {
		dir := copyDir(t, src)
		flip(dir, "checkpoints", 50*ckRecSize+60)
		rep := verifyDamaged(t, dir)
		if rep.FirstBadCheckpoint == nil || *rep.FirstBadCheckpoint != 50 {
			t.Fatalf("problems %v", rep.Problems)
		}
	})
	t.Run("forge checkpoint signature", func(t *testing.T) {
		// Valid checksum, wrong signature.
		dir := copyDir(t, src)
		edit(dir, "checkpoints", func(b []byte) []byte {
			r, _ := decodeCk(b[50*ckRecSize : 51*ckRecSize])
			r.sig[3] ^= 1
			copy(b[50*ckRecSize:], r.encode())
			return b
		})
		rep := verifyDamaged(t, dir)
		if rep.FirstBadCheckpoint == nil || *rep.FirstBadCheckpoint != 50 || !strings.Contains(rep.Problems[0].Message, "signature") {
			t.Fatalf("problems %v", rep.Problems)
		}
	})
	t.Run("drop checkpoints at the end", func(t *testing.T) {
		// Whole acknowledged checkpoint records removed: damage, reported,
		// and nothing cut (it used to pass for an interrupted append).
		dir := copyDir(t, src)
		edit(dir, "checkpoints", func(b []byte) []byte { return b[:len(b)-2*ckRecSize] })
		before := readFile(t, filepath.Join(dir, "entries"))
		l := openT(t, dir)
		defer l.Close()
		if err := l.Corrupt(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checkpoints, offset") {
			t.Fatalf("Corrupt() = %v", err)
		}
		if len(l.Repairs()) != 0 || !bytes.Equal(readFile(t, filepath.Join(dir, "entries")), before) {
			t.Fatalf("repairs %v", l.Repairs())
		}
		rep, err := l.Verify()
		if err == nil || rep.FirstBadCheckpoint == nil {
			t.Fatalf("verify: %v %v", err, rep.Problems)
		}
	})
}

// TestFlipAnyByte flips one byte at many positions of every file and
// checks that Verify fails and points at the right record.
func TestFlipAnyByte(t *testing.T) {
	src := buildLog(t, 300)
	dir := copyDir(t, src)
	data := readFile(t, filepath.Join(dir, "entries"))
	offs := recordOffsets(t, data)
	entryAt := func(off int) uint64 {
		return uint64(sort.Search(len(offs), func(i int) bool { return offs[i] > off }) - 1)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, file := range fileNames {
		p := filepath.Join(dir, file)
		orig := readFile(t, p)
		var positions []int
		for i := 0; i < len(orig); i += 1 + len(orig)/70 {
			positions = append(positions, i)
		}
		for i := 0; i < 20; i++ {
			positions = append(positions, r.IntN(len(orig)))
		}
		positions = append(positions, len(orig)-1)
		for _, pos := range positions {
			b := append([]byte(nil), orig...)
			b[pos] ^= byte(1 << r.IntN(8))
			writeFile(t, p, b)
			t.Logf("flipped a bit at %s:%d", file, pos) // shown on failure
			// Checking every signature costs 55 µs each; the checksums
			// and roots find all flips outside the checkpoints file.
			rep := verifyDamagedWith(t, dir, VerifyOptions{LatestSignatureOnly: file != "checkpoints"})
			switch file {
			case "entries":
				wantFirstEntry(t, rep, entryAt(pos))
			case "index":
				wantFirstEntry(t, rep, uint64(pos/indexRecSize))
			case "checkpoints":
				if rep.FirstBadCheckpoint == nil || *rep.FirstBadCheckpoint != uint64(pos/ckRecSize) {
					t.Fatalf("flip at checkpoints:%d: %v", pos, rep.Problems)
				}
			case "tiles":
				if rep.Problems[0].File != "tiles" {
					t.Fatalf("flip at tiles:%d: %v", pos, rep.Problems)
				}
			}
		}
		writeFile(t, p, orig)
	}
	// Key files.
	for _, f := range []string{fileKey, fileKeyPub} {
		p := filepath.Join(dir, f)
		orig := readFile(t, p)
		for pos := 0; pos < len(orig)-1; pos += 7 {
			b := append([]byte(nil), orig...)
			b[pos] ^= 0x01
			writeFile(t, p, b)
			if l, err := Open(dir); err == nil {
				if _, err := l.Verify(); err == nil {
					t.Fatalf("flip at %s:%d not detected", f, pos)
				}
				l.Close()
			}
		}
		writeFile(t, p, orig)
		os.Chmod(p, 0o600)
	}
	l := openT(t, dir)
	defer l.Close()
	mustVerify(t, l)
}
