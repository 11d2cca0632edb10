package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// Receipt proves offline that one entry is in the log: it carries the
// entry's bytes exactly as hashed into the leaf, the inclusion proof and
// the signed checkpoint the proof leads to. VerifyReceipt needs only the
// receipt and the log's public key.
type Receipt struct {
	Version    int      `json:"version"` // 1
	Origin     string   `json:"origin"`
	Index      uint64   `json:"index"`      // leaf index = entry seq
	TreeSize   uint64   `json:"tree_size"`  // size of the checkpoint
	Entry      []byte   `json:"entry"`      // base64 of the canonical entry JSON (the leaf data)
	LeafHash   []byte   `json:"leaf_hash"`  // base64 SHA-256(0x00 || entry), informational
	Proof      [][]byte `json:"proof"`      // base64 RFC 6962 inclusion path, leaf to root
	Checkpoint string   `json:"checkpoint"` // signed checkpoint note
}

// DecodeEntry decodes the entry carried by the receipt. It does not verify
// anything; call VerifyReceipt first.
func (r Receipt) DecodeEntry() (Entry, error) {
	var e Entry
	if err := json.Unmarshal(r.Entry, &e); err != nil {
		return Entry{}, fmt.Errorf("receipt entry: %w", err)
	}
	return e, nil
}

// Consistency proves that the log at NewSize extends the log at OldSize:
// nothing committed up to OldSize was changed, removed or reordered.
type Consistency struct {
	Version       int      `json:"version"` // 1
	Origin        string   `json:"origin"`
	OldSize       uint64   `json:"old_size"`
	NewSize       uint64   `json:"new_size"`
	OldCheckpoint string   `json:"old_checkpoint,omitempty"` // signed; empty when OldSize is 0
	NewCheckpoint string   `json:"new_checkpoint"`           // signed
	Proof         [][]byte `json:"proof"`                    // base64 RFC 6962 consistency proof
}

// Checkpoint returns the latest signed checkpoint. For an empty log it is
// a freshly signed checkpoint of size 0 (not stored).
func (l *Log) Checkpoint() (SignedCheckpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(false)
	if err != nil {
		return SignedCheckpoint{}, err
	}
	defer release()
	return l.latest()
}

func (l *Log) latest() (SignedCheckpoint, error) {
	if l.corrupt != nil {
		return SignedCheckpoint{}, l.corrupt
	}
	if l.nck > 0 {
		return l.key.signed(&l.last), nil
	}
	if l.key.signer == nil {
		return SignedCheckpoint{}, fmt.Errorf("%w: cannot sign the empty checkpoint", ErrNoKey)
	}
	rec, err := l.key.sign(0, hasher.EmptyRoot())
	if err != nil {
		return SignedCheckpoint{}, err
	}
	return l.key.signed(&rec), nil
}

// nodeHashes returns the hashes of the given complete nodes.
func (l *Log) nodeHashes(ids []compact.NodeID) ([][]byte, error) {
	groups := map[uint64][][]byte{}
	read := func(g uint64) ([][]byte, error) {
		if hs, ok := groups[g]; ok {
			return hs, nil
		}
		hs, err := l.readGroup(g)
		if err == nil {
			groups[g] = hs
		}
		return hs, err
	}
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := l.t.node(id, read)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// InclusionProof returns a receipt for entry seq against the latest
// signed checkpoint.
func (l *Log) InclusionProof(seq uint64) (Receipt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(false)
	if err != nil {
		return Receipt{}, err
	}
	defer release()
	if l.corrupt != nil {
		return Receipt{}, l.corrupt
	}
	if seq >= l.n {
		return Receipt{}, fmt.Errorf("%w: entry %d (the log has %d entries)", ErrNotFound, seq, l.n)
	}
	payload, err := l.readEntry(seq)
	if err != nil {
		return Receipt{}, err
	}
	nodes, err := proof.Inclusion(seq, l.n)
	if err != nil {
		return Receipt{}, err
	}
	hs, err := l.nodeHashes(nodes.IDs)
	if err != nil {
		return Receipt{}, err
	}
	p, err := nodes.Rehash(hs, hasher.HashChildren)
	if err != nil {
		return Receipt{}, err
	}
	leaf := hasher.HashLeaf(payload)
	// Never hand out a receipt that does not verify.
	if err := proof.VerifyInclusion(hasher, seq, l.n, leaf, p, l.last.root[:]); err != nil {
		return Receipt{}, fmt.Errorf("%w: inclusion proof for entry %d does not match checkpoint %d: %v", ErrCorrupt, seq, l.nck-1, err)
	}
	return Receipt{
		Version:    1,
		Origin:     l.key.origin,
		Index:      seq,
		TreeSize:   l.n,
		Entry:      payload,
		LeafHash:   leaf,
		Proof:      p,
		Checkpoint: l.key.signedNote(&l.last),
	}, nil
}

// ConsistencyProof proves that the latest checkpoint extends the stored
// checkpoint of size oldSize (0 is allowed and proves nothing).
func (l *Log) ConsistencyProof(oldSize uint64) (Consistency, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(false)
	if err != nil {
		return Consistency{}, err
	}
	defer release()
	if l.corrupt != nil {
		return Consistency{}, l.corrupt
	}
	latest, err := l.latest()
	if err != nil {
		return Consistency{}, err
	}
	if oldSize > l.n {
		return Consistency{}, fmt.Errorf("old size %d is larger than the log (%d entries): the log was truncated, or the checkpoint is from another log", oldSize, l.n)
	}
	c := Consistency{Version: 1, Origin: l.key.origin, OldSize: oldSize, NewSize: l.n, NewCheckpoint: latest.Note, Proof: [][]byte{}}
	if oldSize == 0 {
		return c, nil
	}
	old, err := l.findCheckpoint(oldSize)
	if err != nil {
		return Consistency{}, err
	}
	c.OldCheckpoint = l.key.signedNote(&old)
	nodes, err := proof.Consistency(oldSize, l.n)
	if err != nil {
		return Consistency{}, err
	}
	hs, err := l.nodeHashes(nodes.IDs)
	if err != nil {
		return Consistency{}, err
	}
	if c.Proof, err = nodes.Rehash(hs, hasher.HashChildren); err != nil {
		return Consistency{}, err
	}
	if err := proof.VerifyConsistency(hasher, oldSize, l.n, c.Proof, old.root[:], l.last.root[:]); err != nil {
		return Consistency{}, fmt.Errorf("%w: checkpoint of size %d is not consistent with the current tree: %v", ErrCorrupt, oldSize, err)
	}
	return c, nil
}

// ConsistencyFrom proves that the log extends a checkpoint saved earlier
// (a signed note, e.g. the checkpoint of a receipt or of `op-dbus audit
// checkpoint`). It fails when the note is not signed by this log's key,
// when the log is now shorter than the checkpoint, or when the log's own
// checkpoint at that size has another root: the log was rewritten (and
// re-signed) after the saved checkpoint was issued.
func (l *Log) ConsistencyFrom(signedNote string) (Consistency, error) {
	saved, err := openCheckpoint(signedNote, l.key.verifier)
	if err != nil {
		return Consistency{}, fmt.Errorf("saved checkpoint: %w", err)
	}
	c, err := l.ConsistencyProof(saved.Size)
	if err != nil {
		return Consistency{}, err
	}
	if saved.Size > 0 {
		own, err := openCheckpoint(c.OldCheckpoint, l.key.verifier)
		if err != nil {
			return Consistency{}, err
		}
		if !bytes.Equal(own.Root, saved.Root) {
			return Consistency{}, fmt.Errorf("%w: the saved checkpoint of size %d has root %x, the log's checkpoint of that size has %x: the log was rewritten after the saved checkpoint was issued",
				ErrVerify, saved.Size, saved.Root, own.Root)
		}
	}
	return c, nil
}

// findCheckpoint finds a stored checkpoint of exactly the given size
// (checkpoint sizes only grow, so a binary search works).
func (l *Log) findCheckpoint(size uint64) (ckRecord, error) {
	var ioErr error
	read := func(i int) ckRecord {
		b, err := l.pread(fCkpts, int64(i)*ckRecSize, ckRecSize)
		if err != nil {
			ioErr = err
			return ckRecord{}
		}
		r, err := decodeCk(b)
		if err != nil {
			ioErr = fmt.Errorf("%w: checkpoint %d: %v", ErrCorrupt, i, err)
		}
		return r
	}
	n := int(l.nck)
	i := sort.Search(n, func(i int) bool { return ioErr != nil || read(i).size >= size })
	if ioErr != nil {
		return ckRecord{}, ioErr
	}
	if i < n {
		if r := read(i); ioErr == nil && r.size == size {
			if !l.key.verifyCk(&r) {
				return ckRecord{}, fmt.Errorf("%w: checkpoint %d (size %d): bad signature", ErrCorrupt, i, size)
			}
			return r, nil
		}
	}
	if ioErr != nil {
		return ckRecord{}, ioErr
	}
	msg := fmt.Sprintf("no checkpoint was signed at size %d (sizes inside a batch never are)", size)
	if i > 0 {
		msg += fmt.Sprintf("; the nearest smaller is %d", read(i-1).size)
	}
	if i < n {
		msg += fmt.Sprintf("; the nearest larger is %d", read(i).size)
	}
	return ckRecord{}, errors.New(msg)
}

// VerifyReceipt checks a receipt offline: the checkpoint's signature with
// publicKey (a receipt from another log, or for another key, fails here),
// that the checkpoint matches the receipt, that the entry bytes carry the
// receipt's index, and the inclusion proof of the entry's leaf hash
// (recomputed from the entry bytes) against the checkpoint's root.
func VerifyReceipt(r Receipt, publicKey string) error {
	v, err := parseVerifier(publicKey)
	if err != nil {
		return err
	}
	if r.Version != 1 {
		return fmt.Errorf("receipt version %d is not supported (want 1)", r.Version)
	}
	cp, err := openCheckpoint(r.Checkpoint, v)
	if err != nil {
		return fmt.Errorf("receipt: %w", err)
	}
	if r.Origin != cp.Origin {
		return fmt.Errorf("receipt origin %q does not match its checkpoint's origin %q", r.Origin, cp.Origin)
	}
	if r.TreeSize != cp.Size {
		return fmt.Errorf("receipt tree size %d does not match its checkpoint's size %d", r.TreeSize, cp.Size)
	}
	if r.Index >= r.TreeSize {
		return fmt.Errorf("receipt index %d is outside the tree of size %d", r.Index, r.TreeSize)
	}
	if seq, ok := parseSeq(r.Entry); !ok || seq != r.Index {
		return fmt.Errorf("receipt entry holds %s, not entry %d", seqString(seq, ok), r.Index)
	}
	leaf := hasher.HashLeaf(r.Entry)
	if len(r.LeafHash) > 0 && !bytes.Equal(leaf, r.LeafHash) {
		return fmt.Errorf("receipt entry does not hash to its leaf_hash: the entry was modified")
	}
	if err := proof.VerifyInclusion(hasher, r.Index, r.TreeSize, leaf, r.Proof, cp.Root); err != nil {
		return fmt.Errorf("receipt for entry %d does not prove inclusion in checkpoint of size %d (entry or proof modified): %v", r.Index, r.TreeSize, err)
	}
	return nil
}

// VerifyConsistency checks a consistency proof offline with the log's
// public key: both checkpoints' signatures and the proof between them.
func VerifyConsistency(c Consistency, publicKey string) error {
	v, err := parseVerifier(publicKey)
	if err != nil {
		return err
	}
	if c.Version != 1 {
		return fmt.Errorf("consistency proof version %d is not supported (want 1)", c.Version)
	}
	newCp, err := openCheckpoint(c.NewCheckpoint, v)
	if err != nil {
		return fmt.Errorf("new checkpoint: %w", err)
	}
	if newCp.Size != c.NewSize || newCp.Origin != c.Origin {
		return fmt.Errorf("new checkpoint (%s, size %d) does not match the proof (%s, size %d)", newCp.Origin, newCp.Size, c.Origin, c.NewSize)
	}
	if c.OldSize > c.NewSize {
		return fmt.Errorf("old size %d is larger than new size %d", c.OldSize, c.NewSize)
	}
	if c.OldSize == 0 {
		return nil
	}
	oldCp, err := openCheckpoint(c.OldCheckpoint, v)
	if err != nil {
		return fmt.Errorf("old checkpoint: %w", err)
	}
	if oldCp.Size != c.OldSize || oldCp.Origin != c.Origin {
		return fmt.Errorf("old checkpoint (%s, size %d) does not match the proof (%s, size %d)", oldCp.Origin, oldCp.Size, c.Origin, c.OldSize)
	}
	if err := proof.VerifyConsistency(hasher, c.OldSize, c.NewSize, c.Proof, oldCp.Root, newCp.Root); err != nil {
		return fmt.Errorf("the log at size %d does not extend the log at size %d: %v", c.NewSize, c.OldSize, err)
	}
	return nil
}
