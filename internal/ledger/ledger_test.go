package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendGetEntries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir)
	if l.Size() != 0 {
		t.Fatalf("new log size %d", l.Size())
	}
	mustVerify(t, l)
	var want []Entry
	for i := 0; i < 10; i++ {
		e := testEntry(i)
		seq, err := l.Append(e)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("seq %d, want %d", seq, i)
		}
		e.Seq = seq
		want = append(want, e)
	}
	batch := []Entry{testEntry(10), testEntry(11), testEntry(12)}
	seqs, err := l.AppendBatch(batch)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seqs, []uint64{10, 11, 12}) {
		t.Fatalf("batch seqs %v", seqs)
	}
	for i, s := range seqs {
		batch[i].Seq = s
		want = append(want, batch[i])
	}
	if l.Size() != 13 {
		t.Fatalf("size %d", l.Size())
	}
	check := func(l *Log) {
		for i, w := range want {
			got, err := l.Get(uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, w) {
				t.Fatalf("Get(%d) = %+v\nwant %+v", i, got, w)
			}
		}
		if _, err := l.Get(13); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(13): %v, want ErrNotFound", err)
		}
		all, err := l.Entries(0, nil)
		if err != nil || !reflect.DeepEqual(all, want) {
			t.Fatalf("Entries: %v, %d entries", err, len(all))
		}
		mcp, err := l.Entries(2, func(e Entry) bool { return e.Source == "mcp" })
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, e := range mcp {
			seqs = append(seqs, e.Seq)
		}
		if !reflect.DeepEqual(seqs, []uint64{3, 7, 11}) {
			t.Fatalf("filtered seqs %v", seqs)
		}
		if es, err := l.Entries(100, nil); err != nil || len(es) != 0 {
			t.Fatalf("Entries past end: %v %v", es, err)
		}
		rep := mustVerify(t, l)
		if rep.Size != 13 || rep.Entries != 13 || rep.Checkpoints != 11 {
			t.Fatalf("report %+v", rep)
		}
		cp, err := l.Checkpoint()
		if err != nil || cp.Size != 13 {
			t.Fatalf("checkpoint %+v %v", cp, err)
		}
		if _, err := OpenCheckpoint(cp.Note, l.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(testEntry(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	l2 := openT(t, dir)
	defer l2.Close()
	if len(l2.Repairs()) != 0 {
		t.Fatalf("unexpected repairs %v", l2.Repairs())
	}
	check(l2)
	if seq, err := l2.Append(testEntry(13)); err != nil || seq != 13 {
		t.Fatalf("append after reopen: %d %v", seq, err)
	}

	// Permissions.
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %o", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(dir, fileKey)); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %o", fi.Mode().Perm())
	}
	pub := strings.TrimSpace(string(readFile(t, filepath.Join(dir, fileKeyPub))))
	if pub != l2.PublicKey() || !strings.HasPrefix(pub, l2.Origin()+"+") || !strings.HasPrefix(l2.Origin(), "op-dbus/") {
		t.Errorf("public key %q origin %q", pub, l2.Origin())
	}
}

func TestTimeDefaultsAndCanonical(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "audit"))
	defer l.Close()
	before := time.Now().Add(-time.Second)
	seq, err := l.Append(Entry{Kind: "refused", Source: "mcp", Result: "refused", Message: "<not allowed> & logged"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	if e.Time.Before(before) || e.Time.Location() != time.UTC {
		t.Fatalf("time %v", e.Time)
	}
	r, err := l.InclusionProof(seq)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(r.Entry, []byte(`{"seq":0,"time":"`)) || !bytes.Contains(r.Entry, []byte(`<not allowed> & logged`)) {
		t.Fatalf("canonical form %s", r.Entry)
	}
	// Invalid raw JSON is replaced, not stored and not fatal.
	seq, err = l.Append(Entry{Kind: "apply", Result: "failed", Extra: json.RawMessage(`{broken`)})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ = l.Get(seq); string(e.Extra) != `"[redacted: invalid JSON]"` {
		t.Fatalf("extra %s", e.Extra)
	}
}

func TestRedactionNeverStored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir)
	e := testEntry(1)
	e.Ops = append(e.Ops, OpRecord{
		ID: "wireguard/wg0", Plugin: "wireguard", Status: "done",
		Description: "set wg0 private_key=DESCSECRET1",
		Error:       "wg: password: ERRSECRET2 rejected",
		Data: json.RawMessage(`{"interface":"wg0","private_key":"WGPRIVKEYSECRET3=",
			"peers":[{"public_key":"PUBLICKEYOK","PresharedKey":"PSKSECRET4"}],
			"auth":{"Token":"TOKSECRET5","api-key":12345678},"psk":null}`),
	})
	e.Message = `applied; "password": "MSGSECRET6", Authorization: Bearer BEARERSECRET7`
	e.Extra = json.RawMessage(`{"client_secret":"EXTRASECRET8","cmd":"wg set wg0 private-key=CMDSECRET9"}`)
	seq, err := l.Append(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	secrets := []string{"DESCSECRET1", "ERRSECRET2", "WGPRIVKEYSECRET3", "PSKSECRET4", "TOKSECRET5", "12345678", "MSGSECRET6", "BEARERSECRET7", "EXTRASECRET8", "CMDSECRET9"}
	ents, _ := os.ReadDir(dir)
	for _, f := range ents {
		if f.IsDir() {
			continue
		}
		b := readFile(t, filepath.Join(dir, f.Name()))
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("secret %s stored in %s", s, f.Name())
			}
		}
	}
	var data map[string]any
	if err := json.Unmarshal(got.Ops[2].Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["private_key"] != Redacted || data["psk"] != nil {
		t.Errorf("data %v", data)
	}
	if !strings.Contains(string(got.Ops[2].Data), "PUBLICKEYOK") {
		t.Errorf("public key was redacted: %s", got.Ops[2].Data)
	}
	// The caller's entry is not modified.
	if !strings.Contains(string(e.Ops[2].Data), "WGPRIVKEYSECRET3") {
		t.Error("Append modified the caller's entry")
	}
}

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, ``},
		{`{"private_key":"x","n":1.50000000000000000001}`, `{"n":1.50000000000000000001,"private_key":"[redacted]"}`},
		{`[{"PrivateKey":{"a":1}},{"wg-preshared-key":"k"}]`, `[{"PrivateKey":"[redacted]"},{"wg-preshared-key":"[redacted]"}]`},
		{`{"note":"token=abc def"}`, `{"note":"token=[redacted] def"}`},
		{`"password: hunter2"`, `"password: [redacted]"`},
		{`{"key":"nginx.service","public_key":"P"}`, `{"key":"nginx.service","public_key":"P"}`},
		{`not json`, `"[redacted: invalid JSON]"`},
		{`{"a":1} {"b":2}`, `"[redacted: invalid JSON]"`},
	} {
		if got := string(Redact(json.RawMessage(c.in))); got != c.want {
			t.Errorf("Redact(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"PrivateKey = abc", "PrivateKey = [redacted]"},
		{"wg_private_key=abc,next", "wg_private_key=[redacted],next"},
		{`{"token": "a b c"}`, `{"token": "[redacted]"}`},
		{"Authorization: Bearer abc.def", "Authorization: Bearer [redacted]"},
		{"curl -H 'Bearer abc'", "curl -H 'Bearer [redacted]'"},
		{"the token expired", "the token expired"},
		{"password=[redacted]", "password=[redacted]"},
	} {
		got := RedactText(c.in)
		if got != c.want {
			t.Errorf("RedactText(%q) = %q, want %q", c.in, got, c.want)
		}
		if again := RedactText(got); again != got {
			t.Errorf("RedactText not idempotent: %q -> %q", got, again)
		}
	}
}

func TestConcurrentAppenders(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l0 := openT(t, dir)
	l0.Close()
	const handles, per = 3, 40
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for h := 0; h < handles; h++ {
		// Separate handles take the flock against each other, as two
		// processes would; two goroutines share each handle.
		l := openT(t, dir)
		defer l.Close()
		for g := 0; g < 2; g++ {
			wg.Add(1)
			go func(h, g int) {
				defer wg.Done()
				for i := 0; i < per/2; i++ {
					var seqs []uint64
					var err error
					if i%2 == 0 {
						var s uint64
						s, err = l.Append(testEntry(i))
						seqs = []uint64{s}
					} else {
						seqs, err = l.AppendBatch([]Entry{testEntry(i), testEntry(i + 1)})
					}
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, s := range seqs {
						if seen[s] {
							t.Errorf("seq %d handed out twice", s)
						}
						seen[s] = true
					}
					mu.Unlock()
					if _, err := l.Get(seqs[0]); err != nil {
						t.Error(err)
					}
				}
			}(h, g)
		}
	}
	wg.Wait()
	l := openT(t, dir)
	defer l.Close()
	want := uint64(handles * 2 * (per / 2 / 2 * 3))
	if l.Size() != want || uint64(len(seen)) != want {
		t.Fatalf("size %d, seen %d, want %d", l.Size(), len(seen), want)
	}
	mustVerify(t, l)
	if len(l.Repairs()) != 0 {
		t.Fatalf("repairs %v", l.Repairs())
	}
}

func TestMissingKey(t *testing.T) {
	src := buildLog(t, 5)

	// Both keys gone: refuse to open rather than silently start a new key.
	dir := copyDir(t, src)
	os.Remove(filepath.Join(dir, fileKey))
	os.Remove(filepath.Join(dir, fileKeyPub))
	if _, err := Open(dir); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "restore the key") {
		t.Fatalf("Open without key: %v", err)
	}

	// Private key gone, public key present: read and verify, not append.
	dir = copyDir(t, src)
	os.Remove(filepath.Join(dir, fileKey))
	l := openT(t, dir)
	mustVerify(t, l)
	if _, err := l.InclusionProof(2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(testEntry(9)); !errors.Is(err, ErrNoKey) {
		t.Fatalf("append without private key: %v", err)
	}
	l.Close()

	// Key readable by others.
	dir = copyDir(t, src)
	os.Chmod(filepath.Join(dir, fileKey), 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("Open with 0644 key: %v", err)
	}

	// Key replaced by another log's key.
	dir = copyDir(t, src)
	other := buildLog(t, 1)
	writeFile(t, filepath.Join(dir, fileKey), readFile(t, filepath.Join(other, fileKey)))
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("Open with swapped key: %v", err)
	}
	writeFile(t, filepath.Join(dir, fileKeyPub), readFile(t, filepath.Join(other, fileKeyPub)))
	l = openT(t, dir)
	defer l.Close()
	if l.Corrupt() == nil {
		t.Fatal("log with a foreign key is not flagged")
	}
	if _, err := l.Verify(); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("Verify with foreign key: %v", err)
	}
}
