package ledger

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
)

// FuzzDecodeRecord: the record decoder never panics, accepts only what
// appendRecord produces, and parseSeq agrees with strconv.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, []byte(`{"seq":0,"time":"2025-01-01T00:00:00Z"}`)))
	f.Add(appendRecord(nil, []byte(`{"seq":18446744073709551615}`)))
	f.Add(appendRecord(nil, []byte(`{"seq":01,"x":1}`)))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5})
	f.Add([]byte{0, 0, 0, 3, 0, 0, 0, 0, 'a', 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, n, err := decodeRecord(b)
		if err != nil {
			if n != 0 || payload != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if n > len(b) || n != recordHeaderSize+len(payload) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		if !bytes.Equal(appendRecord(nil, payload), b[:n]) {
			t.Fatal("decode/encode mismatch")
		}
		if seq, ok := parseSeq(payload); ok {
			want := []byte(seqPrefix)
			want = append(want, []byte(jsonUint(seq))...)
			if !bytes.HasPrefix(payload, want) {
				t.Fatalf("parseSeq(%q) = %d", payload, seq)
			}
		}
	})
}

func jsonUint(v uint64) string { b, _ := json.Marshal(v); return string(b) }

// FuzzRedact: Redact always returns valid JSON and is idempotent.
func FuzzRedact(f *testing.F) {
	f.Add([]byte(`{"private_key":"x","a":[{"token":"t"}],"s":"password=1"}`))
	f.Add([]byte(`"Bearer abc"`))
	f.Add([]byte(`[1,2.5e10,null,true]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := Redact(b)
		if len(bytes.TrimSpace(b)) == 0 {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Redact(%q) = %q: invalid JSON", b, out)
		}
		if again := Redact(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
	})
}

// FuzzTornTail: whatever an interrupted append leaves after the committed
// entries, Open cuts it and the log verifies with all entries intact.
func FuzzTornTail(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendRecord(nil, []byte(`{"seq":3,"time":"2025-01-01T00:00:00Z"}`)))
	f.Add([]byte{0, 0, 0, 9, 1, 2, 3})
	f.Add(make([]byte, 100))
	src := buildLog(f, 3)
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := copyDir(t, src)
		appendBytes2(t, filepath.Join(dir, "entries"), tail)
		l, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l.Corrupt() != nil || l.Size() != 3 {
			t.Fatalf("size %d corrupt %v", l.Size(), l.Corrupt())
		}
		if len(tail) > 0 && len(l.Repairs()) == 0 {
			t.Fatal("tail not reported")
		}
		mustVerify(t, l)
	})
}

func appendBytes2(t testing.TB, p string, b []byte) {
	old := readFile(t, p)
	writeFile(t, p, append(old, b...))
}

// FuzzTamper: whatever one flipped byte (mask at off) and a truncation of
// the last trunc bytes do to one file of an acknowledged log, Open claims
// no repair, changes no file, and reports the damage (Corrupt non-nil)
// exactly when the file changed. The corpus holds the attacks of issue 19:
// a byte flipped in the middle of entries, and `truncate -s -10
// checkpoints`.
func FuzzTamper(f *testing.F) {
	f.Add(uint8(fEntries), uint32(2000), uint8(0x20), uint16(0))
	f.Add(uint8(fCkpts), uint32(0), uint8(0), uint16(10))
	f.Add(uint8(fCkpts), uint32(0), uint8(0), uint16(ckRecSize))
	f.Add(uint8(fIndex), uint32(45), uint8(1), uint16(0))
	src := buildLog(f, 7)
	f.Fuzz(func(t *testing.T, file uint8, off uint32, mask uint8, trunc uint16) {
		dir := copyDir(t, src)
		p := filepath.Join(dir, fileNames[int(file)%nFiles])
		orig := readFile(t, p)
		b := append([]byte(nil), orig...)
		if len(b) > 0 {
			b[int(off)%len(b)] ^= mask
		}
		b = b[:len(b)-min(int(trunc), len(b))]
		writeFile(t, p, b)
		var before [nFiles][]byte
		for i, name := range fileNames {
			before[i] = readFile(t, filepath.Join(dir, name))
		}
		l, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if r := l.Repairs(); len(r) != 0 {
			t.Fatalf("repair claimed for damage: %v", r)
		}
		for i, name := range fileNames {
			if !bytes.Equal(readFile(t, filepath.Join(dir, name)), before[i]) {
				t.Fatalf("Open changed %s", name)
			}
		}
		changed := !bytes.Equal(b, orig)
		if changed != (l.Corrupt() != nil) {
			t.Fatalf("file changed %v, Corrupt() = %v", changed, l.Corrupt())
		}
	})
}
