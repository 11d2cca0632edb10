package ledger

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// referenceRoot is RFC 6962's MTH, written out recursively.
func referenceRoot(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		return hasher.EmptyRoot()
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return hasher.HashChildren(referenceRoot(leaves[:k]), referenceRoot(leaves[k:]))
}

func TestRootsMatchReference(t *testing.T) {
	l := openT(t, filepath.Join(t.TempDir(), "audit"))
	defer l.Close()
	var leaves [][]byte
	for i := 0; i < 530; {
		k := 1 + i%5
		if i > 250 && i < 260 {
			k = 1
		}
		es := make([]Entry, k)
		for j := range es {
			es[j] = testEntry(i + j)
		}
		if _, err := l.AppendBatch(es); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < k; j++ {
			r, err := l.InclusionProof(uint64(i + j))
			if err != nil {
				t.Fatal(err)
			}
			if len(leaves) == i+j {
				leaves = append(leaves, hasher.HashLeaf(r.Entry))
			}
		}
		i += k
		cp, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size != uint64(i) || !bytes.Equal(cp.Root, referenceRoot(leaves)) {
			t.Fatalf("size %d: root %x, reference %x", cp.Size, cp.Root, referenceRoot(leaves))
		}
	}
}

func TestInclusionReceipts(t *testing.T) {
	dir := buildLog(t, 600)
	l := openT(t, dir)
	defer l.Close()
	key := l.PublicKey()
	other := openT(t, buildLog(t, 3))
	defer other.Close()

	for seq := uint64(0); seq < 600; seq++ {
		r, err := l.InclusionProof(seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyReceipt(r, key); err != nil {
			t.Fatalf("receipt %d: %v", seq, err)
		}
	}
	r, err := l.InclusionProof(417)
	if err != nil {
		t.Fatal(err)
	}
	// Offline: through JSON, with only the receipt and the key.
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var r2 Receipt
	if err := json.Unmarshal(js, &r2); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReceipt(r2, key); err != nil {
		t.Fatal(err)
	}
	if e, err := r2.DecodeEntry(); err != nil || e.Seq != 417 {
		t.Fatalf("entry %+v %v", e, err)
	}

	bad := func(name, wantErr string, mod func(r *Receipt), key string) {
		t.Helper()
		var c Receipt
		json.Unmarshal(js, &c)
		mod(&c)
		err := VerifyReceipt(c, key)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: error %v, want one containing %q", name, err, wantErr)
		}
	}
	nop := func(*Receipt) {}
	bad("other log's key", "another log", nop, other.PublicKey())
	bad("no key", "no public key", nop, "")
	bad("malformed key", "not a note verifier key", nop, "op-dbus+123+abc")
	bad("modified entry", "modified", func(r *Receipt) {
		r.Entry = bytes.Replace(r.Entry, []byte(`"success"`), []byte(`"failed!"`), 1)
		r.Entry = bytes.Replace(r.Entry, []byte(`"rolled-back"`), []byte(`"success"`), 1)
	}, key)
	bad("modified entry and leaf hash", "does not prove inclusion", func(r *Receipt) {
		r.Entry = bytes.Replace(r.Entry, []byte(`"uid":0`), []byte(`"uid":1`), 1)
		r.LeafHash = hasher.HashLeaf(r.Entry)
	}, key)
	bad("modified proof", "does not prove inclusion", func(r *Receipt) { r.Proof[2][0] ^= 1 }, key)
	bad("short proof", "does not prove inclusion", func(r *Receipt) { r.Proof = r.Proof[1:] }, key)
	bad("other index", "not entry 418", func(r *Receipt) { r.Index = 418 }, key)
	bad("other size", "does not match its checkpoint", func(r *Receipt) { r.TreeSize = 599 }, key)
	bad("modified checkpoint", "modified", func(r *Receipt) {
		r.Checkpoint = strings.Replace(r.Checkpoint, "\n600\n", "\n601\n", 1)
	}, key)
	bad("other log's checkpoint", "another log", func(r *Receipt) {
		cp, _ := other.Checkpoint()
		r.Checkpoint = cp.Note
	}, key)
	bad("version", "version", func(r *Receipt) { r.Version = 2 }, key)

	// Old receipts stay valid after the log grows, and the log proves
	// that it extends their checkpoint.
	for i := 0; i < 10; i++ {
		if _, err := l.Append(testEntry(600 + i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := VerifyReceipt(r, key); err != nil {
		t.Fatal(err)
	}
	c, err := l.ConsistencyProof(r.TreeSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(c, key); err != nil {
		t.Fatal(err)
	}
	if c.OldCheckpoint != r.Checkpoint {
		t.Fatal("consistency proof does not start at the receipt's checkpoint")
	}
	c, err = l.ConsistencyFrom(r.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyConsistency(c, key); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ConsistencyFrom(func() string { cp, _ := other.Checkpoint(); return cp.Note }()); err == nil || !strings.Contains(err.Error(), "another log") {
		t.Fatalf("foreign checkpoint: %v", err)
	}
}

// TestRewrittenLogDetected: someone with the key rewrites entry 5 and
// re-signs every checkpoint. Verify cannot see it; a checkpoint or receipt
// kept elsewhere can.
func TestRewrittenLogDetected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir)
	for i := 0; i < 10; i++ {
		if _, err := l.Append(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	saved, err := l.InclusionProof(5)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()

	// Rebuild the log next to it with the same key and a different entry 5.
	forged := filepath.Join(t.TempDir(), "audit")
	if err := os.MkdirAll(forged, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{fileKey, fileKeyPub} {
		writeFile(t, filepath.Join(forged, f), readFile(t, filepath.Join(dir, f)))
	}
	fl := openT(t, forged)
	defer fl.Close()
	for i := 0; i < 12; i++ {
		e := testEntry(i)
		if i == 5 {
			e.Result = "failed"
		}
		if _, err := fl.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	mustVerify(t, fl) // internally consistent
	if _, err := fl.ConsistencyFrom(saved.Checkpoint); err == nil || !strings.Contains(err.Error(), "rewritten") {
		t.Fatalf("rewrite not detected: %v", err)
	}
	// The old receipt still verifies on its own (it proves what the log
	// said at the time), but not against the forged log's proofs.
	if err := VerifyReceipt(saved, fl.PublicKey()); err != nil {
		t.Fatal(err)
	}
}

func TestConsistencyProofs(t *testing.T) {
	dir := buildLog(t, 520)
	l := openT(t, dir)
	defer l.Close()
	key := l.PublicKey()
	// Checkpointed sizes of buildLog: batches 1,2,3 repeating.
	var sizes []uint64
	for s, b := uint64(0), uint64(1); s < 520; b = b%3 + 1 {
		s = min(s+b, 520)
		sizes = append(sizes, s)
	}
	for _, old := range append([]uint64{0}, sizes...) {
		c, err := l.ConsistencyProof(old)
		if err != nil {
			t.Fatalf("old size %d: %v", old, err)
		}
		js, _ := json.Marshal(c)
		var c2 Consistency
		json.Unmarshal(js, &c2)
		if err := VerifyConsistency(c2, key); err != nil {
			t.Fatalf("old size %d: %v", old, err)
		}
	}
	if _, err := l.ConsistencyProof(5); err == nil || !strings.Contains(err.Error(), "no checkpoint was signed at size 5") {
		t.Fatalf("unsigned size: %v", err)
	}
	if _, err := l.ConsistencyProof(521); err == nil {
		t.Fatal("size beyond the log accepted")
	}
	c, err := l.ConsistencyProof(258)
	if err != nil {
		t.Fatal(err)
	}
	other := openT(t, buildLog(t, 1))
	defer other.Close()
	if err := VerifyConsistency(c, other.PublicKey()); err == nil || !strings.Contains(err.Error(), "another log") {
		t.Fatalf("other key: %v", err)
	}
	c.Proof[0][5] ^= 1
	if err := VerifyConsistency(c, key); err == nil || !strings.Contains(err.Error(), "does not extend") {
		t.Fatalf("modified proof: %v", err)
	}
	c, _ = l.ConsistencyProof(258)
	c.OldSize = 257
	if err := VerifyConsistency(c, key); err == nil {
		t.Fatal("mismatched old size accepted")
	}
}
