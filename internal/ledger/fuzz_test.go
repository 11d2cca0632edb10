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
