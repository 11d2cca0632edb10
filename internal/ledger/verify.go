package ledger

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
)

// ErrVerify is wrapped by the error Verify returns when the log is damaged.
var ErrVerify = errors.New("audit log verification failed")

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	// LatestSignatureOnly checks the ed25519 signature of the newest
	// checkpoint only (about 55 µs per signature otherwise); the size and
	// root of every checkpoint are still compared with the tree.
	LatestSignatureOnly bool
}

// Problem is one thing Verify found wrong.
type Problem struct {
	File       string  `json:"file"` // "entries", "index", "tiles", "checkpoints"
	Entry      *uint64 `json:"entry,omitempty"`
	Checkpoint *uint64 `json:"checkpoint,omitempty"`
	Offset     int64   `json:"offset"` // byte offset in File
	Message    string  `json:"message"`
}

func (p Problem) String() string {
	what := p.File
	switch {
	case p.Entry != nil:
		what = fmt.Sprintf("entry %d", *p.Entry)
	case p.Checkpoint != nil:
		what = fmt.Sprintf("checkpoint %d", *p.Checkpoint)
	}
	return fmt.Sprintf("%s (%s, offset %d): %s", what, p.File, p.Offset, p.Message)
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	OK                 bool      `json:"ok"`
	Origin             string    `json:"origin"`
	Size               uint64    `json:"size"`    // entries covered by the latest checkpoint
	Entries            uint64    `json:"entries"` // records found in the entries file
	Checkpoints        uint64    `json:"checkpoints"`
	Signatures         uint64    `json:"signatures_checked"`
	Root               string    `json:"root,omitempty"` // base64 root recomputed at Size
	FirstBadEntry      *uint64   `json:"first_bad_entry,omitempty"`
	FirstBadCheckpoint *uint64   `json:"first_bad_checkpoint,omitempty"`
	Problems           []Problem `json:"problems,omitempty"` // the first 100
	MoreProblems       int       `json:"more_problems,omitempty"`
	Repairs            []string  `json:"repairs,omitempty"` // files kept under repairs/ by earlier repairs
	// Repaired is what this Log cut before the check (at Open or a later
	// reload, see Log.Repairs): the tail of an append that was never
	// acknowledged. The log may verify, but it did not verify as found.
	Repaired []string      `json:"repaired,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

const maxProblems = 100

type verifyState struct {
	rep VerifyReport
}

func (v *verifyState) add(p Problem) {
	if p.Entry != nil && (v.rep.FirstBadEntry == nil || *p.Entry < *v.rep.FirstBadEntry) {
		e := *p.Entry
		v.rep.FirstBadEntry = &e
	}
	if p.Checkpoint != nil && (v.rep.FirstBadCheckpoint == nil || *p.Checkpoint < *v.rep.FirstBadCheckpoint) {
		c := *p.Checkpoint
		v.rep.FirstBadCheckpoint = &c
	}
	if len(v.rep.Problems) < maxProblems {
		v.rep.Problems = append(v.rep.Problems, p)
	} else {
		v.rep.MoreProblems++
	}
}

func u64(v uint64) *uint64 { return &v }

// Verify checks the whole log: every record's framing and checksum, that
// record i holds entry i, every leaf hash against the index, every stored
// 256-leaf subtree hash, every checkpoint's checksum, signature, and root
// against the tree recomputed at its size, and that no committed entry is
// missing. It also reports damage Open found that needs the marker to see
// (an acknowledged checkpoint truncated or replaced). The report names the
// first bad entry and checkpoint; the error (wrapping ErrVerify) is non-nil
// exactly when the report is not OK, or when the log could not be read.
//
// Verify does not trust the marker that keeps Open cheap, and it records
// its result there: see VerifyAll.
func (l *Log) Verify() (VerifyReport, error) { return l.VerifyWith(VerifyOptions{}) }

// VerifyAll is the full verification a long-running process (the daemon)
// should run when it starts and then on a schedule (daily, say); it is
// Verify, documented for that use.
//
// Open re-hashes entries only when a log file was written since the
// marker (<dir>/verified) was recorded, which it sees from the files'
// inode, size and ctime; that catches an edit with any program, but not
// damage that changes no ctime (bit rot, writes to the block device) or
// an attacker who also rewrites the marker. VerifyAll ignores the marker
// and re-reads everything, then records the outcome:
//
//   - clean: the marker is refreshed, so later Opens (of any process)
//     stay cheap; a damage record left by an earlier VerifyAll is cleared
//     (not by a LatestSignatureOnly run).
//   - damaged: Corrupt reports it and Append refuses, in this Log at once
//     and in every other process at its next Open or operation, because
//     the damage is written into the marker. It stays until the files
//     change (e.g. are restored from a backup) and a verification passes.
//
// It holds the shared lock while it reads (about 1.3 s per million
// entries; appends wait) and the exclusive lock briefly to record.
func (l *Log) VerifyAll() (VerifyReport, error) { return l.VerifyWith(VerifyOptions{}) }

// VerifyWith is Verify with options.
func (l *Log) VerifyWith(o VerifyOptions) (VerifyReport, error) {
	start := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(false)
	if err != nil {
		return VerifyReport{}, err
	}
	defer release()
	v := &verifyState{rep: VerifyReport{Origin: l.key.origin}}
	for _, p := range l.damage {
		v.add(p)
	}
	scanned := l.seen
	if err := l.verify(v, o); err != nil {
		return v.rep, err
	}
	if ents, err := os.ReadDir(filepath.Join(l.dir, dirRepairs)); err == nil {
		for _, e := range ents {
			v.rep.Repairs = append(v.rep.Repairs, filepath.Join(dirRepairs, e.Name()))
		}
	}
	if len(v.rep.Problems) == 0 && l.corrupt != nil && o.LatestSignatureOnly {
		v.add(Problem{File: fileMarker, Message: fmt.Sprintf("%v; a check of the latest signature only cannot clear that, run a full verification", l.corrupt)})
	}
	v.rep.Repaired = append([]string(nil), l.repairs...)
	v.rep.OK = len(v.rep.Problems) == 0
	var verr error
	if !v.rep.OK {
		verr = fmt.Errorf("%w: %d problem(s); first: %s", ErrVerify, len(v.rep.Problems)+v.rep.MoreProblems, v.rep.Problems[0])
	}
	if err := l.recordVerify(v, o, scanned); err != nil {
		return v.rep, err
	}
	v.rep.Duration = time.Since(start)
	return v.rep, verr
}

// recordVerify records the outcome of a verification of the files as they
// were at scanned in the marker (see VerifyAll). The caller holds the
// shared lock; it is made exclusive.
func (l *Log) recordVerify(v *verifyState, o VerifyOptions, scanned stamps) error {
	if err := flock(l.lockF, true); err != nil {
		return err
	}
	st, err := l.stamps()
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if !v.rep.OK {
		p := v.rep.Problems[0]
		m, state := l.readMarker()
		if state != markerOK {
			m = l.ack
		}
		m.files = st.files()
		m.damage = fmt.Sprintf("%s (found by a verification at %s)", p, time.Now().UTC().Format(time.RFC3339))
		_ = l.writeMarker(m)
		if l.corrupt == nil {
			_ = l.fail(fmt.Errorf("%s (and %d more problem(s))", p, len(v.rep.Problems)+v.rep.MoreProblems-1))
		}
		if st, err = l.stamps(); err == nil {
			l.seen = st
		}
		return nil
	}
	if st.files() != scanned.files() {
		return nil // another process wrote meanwhile, and recorded its own marker
	}
	if l.corrupt == nil {
		l.markCommitted("")
		return nil
	}
	// The log was refused only because an earlier verification recorded
	// damage; a full one now finds none.
	if o.LatestSignatureOnly {
		return nil
	}
	m, _ := l.readMarker()
	m.damage, m.files = "", [nFiles]stamp{}
	_ = l.writeMarker(m)
	return l.reconcile()
}

type ckRef struct {
	k    uint64
	size uint64
	root [32]byte
}

func (l *Log) verify(v *verifyState, o VerifyOptions) error {
	sizes, err := l.sizes()
	if err != nil {
		return err
	}

	// Checkpoints.
	ckb, err := l.pread(fCkpts, 0, int(sizes[fCkpts]))
	if err != nil {
		return err
	}
	nck := uint64(len(ckb) / ckRecSize)
	v.rep.Checkpoints = nck
	if rem := len(ckb) % ckRecSize; rem != 0 {
		v.add(Problem{File: "checkpoints", Checkpoint: u64(nck), Offset: int64(nck) * ckRecSize,
			Message: fmt.Sprintf("%d trailing bytes are not a complete checkpoint record", rem)})
	}
	recs := make([]ckRecord, nck)
	valid := make([]bool, nck)
	var refs []ckRef
	var committed uint64
	for k := uint64(0); k < nck; k++ {
		r, err := decodeCk(ckb[k*ckRecSize : (k+1)*ckRecSize])
		if err != nil {
			v.add(Problem{File: "checkpoints", Checkpoint: u64(k), Offset: int64(k) * ckRecSize, Message: err.Error() + ": the record was modified"})
			continue
		}
		if r.size < committed {
			v.add(Problem{File: "checkpoints", Checkpoint: u64(k), Offset: int64(k) * ckRecSize,
				Message: fmt.Sprintf("size %d is smaller than the earlier checkpoint's %d: checkpoints were reordered or replaced", r.size, committed)})
		}
		recs[k], valid[k] = r, true
		committed = max(committed, r.size)
		refs = append(refs, ckRef{k: k, size: r.size, root: r.root})
	}
	v.rep.Size = committed
	sort.SliceStable(refs, func(i, j int) bool { return refs[i].size < refs[j].size })

	// Signatures, checked in parallel with the scan below.
	var toSign []uint64
	for k := uint64(0); k < nck; k++ {
		if valid[k] && (!o.LatestSignatureOnly || k == nck-1) {
			toSign = append(toSign, k)
		}
	}
	badSig := make([]bool, len(toSign))
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(toSign); i += workers {
				badSig[i] = !l.key.verifyCk(&recs[toSign[i]])
			}
		}(w)
	}
	defer wg.Wait()

	// Tiles.
	tb, err := l.pread(fTiles, 0, int(sizes[fTiles]))
	if err != nil {
		return err
	}
	ntiles := uint64(len(tb) / tileRecSize)
	if len(tb)%tileRecSize != 0 {
		v.add(Problem{File: "tiles", Offset: int64(ntiles) * tileRecSize, Message: "trailing bytes are not a complete subtree hash"})
	}
	var tilesSeen uint64
	tileVisitor := func(id compact.NodeID, h []byte) {
		if id.Level != tileHeight {
			return
		}
		tilesSeen = id.Index + 1
		if id.Index >= ntiles {
			return
		}
		if !bytes.Equal(h, tb[id.Index*tileRecSize:(id.Index+1)*tileRecSize]) {
			v.add(Problem{File: "tiles", Offset: int64(id.Index) * tileRecSize,
				Message: fmt.Sprintf("stored hash of subtree %d (entries %d..%d) differs from the entries", id.Index, id.Index*tileWidth, (id.Index+1)*tileWidth-1)})
		}
	}

	// Entries and index, in one pass.
	nidx := uint64(sizes[fIndex] / indexRecSize)
	if sizes[fIndex]%indexRecSize != 0 {
		v.add(Problem{File: "index", Entry: u64(nidx), Offset: int64(nidx) * indexRecSize, Message: "trailing bytes are not a complete index record"})
	}
	ir := bufio.NewReaderSize(io.NewSectionReader(l.f[fIndex], 0, int64(nidx)*indexRecSize), 1<<20)
	dataSize := sizes[fEntries]
	dr := bufio.NewReaderSize(io.NewSectionReader(l.f[fEntries], 0, dataSize), 4<<20)
	seek := func(off int64) { dr.Reset(io.NewSectionReader(l.f[fEntries], off, dataSize-off)) }

	rng := factory.NewEmptyRange(0)
	refi := 0
	var lastGood uint64 // largest checkpoint size whose root matched
	rootBad := false
	for refi < len(refs) && refs[refi].size == 0 {
		if !bytes.Equal(refs[refi].root[:], hasher.EmptyRoot()) {
			v.add(Problem{File: "checkpoints", Checkpoint: u64(refs[refi].k), Offset: int64(refs[refi].k) * ckRecSize, Message: "root of the empty tree is wrong"})
		}
		refi++
	}
	var off int64
	var i uint64
	var hdr [recordHeaderSize]byte
	var idxRec [indexRecSize]byte
	payload := make([]byte, 0, 4096)
	for off < dataSize {
		var idxOff uint64
		haveIdx := false
		var idxLeaf []byte
		var nextIdxOff int64 = -1
		if i < nidx {
			if _, err := io.ReadFull(ir, idxRec[:]); err != nil {
				return err
			}
			idxOff, haveIdx = binary.BigEndian.Uint64(idxRec[:8]), true
			idxLeaf = append([]byte(nil), idxRec[8:]...)
			if i+1 < nidx {
				if b, err := ir.Peek(8); err == nil {
					if x := binary.BigEndian.Uint64(b); x < uint64(dataSize) {
						nextIdxOff = int64(x)
					}
				}
			}
		} else if i == nidx {
			v.add(Problem{File: "index", Entry: u64(i), Offset: int64(i) * indexRecSize, Message: "index record missing"})
		}
		if haveIdx && idxOff != uint64(off) {
			v.add(Problem{File: "index", Entry: u64(i), Offset: int64(i) * indexRecSize,
				Message: fmt.Sprintf("index says the record is at offset %d, it is at %d", idxOff, off)})
		}

		bad := ""
		var leaf []byte
		recLen := int64(-1)
		if _, err := io.ReadFull(dr, hdr[:]); err != nil {
			bad = "incomplete record header at the end of the file"
		} else if n, sum, err := parseHeader(hdr[:]); err != nil {
			bad = err.Error() + " (corrupt length field)"
		} else if off+recordHeaderSize+int64(n) > dataSize {
			bad = fmt.Sprintf("record of %d bytes runs past the end of the file: corrupt length field or truncated file", n)
		} else {
			recLen = recordHeaderSize + int64(n)
			if cap(payload) < n {
				payload = make([]byte, n)
			}
			payload = payload[:n]
			if _, err := io.ReadFull(dr, payload); err != nil {
				return err
			}
			leaf = hasher.HashLeaf(payload)
			switch seq, ok := parseSeq(payload); {
			case checksum(payload) != sum:
				bad = "checksum mismatch: the record was modified"
			case !ok || seq != i:
				bad = fmt.Sprintf("the record holds %s: entries were deleted, duplicated or reordered", seqString(seq, ok))
			case idxLeaf != nil && !bytes.Equal(leaf, idxLeaf):
				v.add(Problem{File: "index", Entry: u64(i), Offset: int64(i)*indexRecSize + 8,
					Message: "leaf hash in the index differs from the entry's hash (entry or index modified)"})
			}
		}
		if bad != "" {
			v.add(Problem{File: "entries", Entry: u64(i), Offset: off, Message: bad})
		}
		if leaf == nil {
			leaf = idxLeaf
			if leaf == nil {
				leaf = make([]byte, 32)
			}
		}
		if err := rng.Append(leaf, tileVisitor); err != nil {
			return err
		}
		i++
		// Compare with every checkpoint of this size.
		for refi < len(refs) && refs[refi].size <= i {
			ref := refs[refi]
			refi++
			if ref.size < i {
				continue // reported as out of order
			}
			root, _ := rng.GetRootHash(nil)
			if bytes.Equal(root, ref.root[:]) {
				lastGood = ref.size
				continue
			}
			if !rootBad {
				rootBad = true
				p := Problem{File: "checkpoints", Checkpoint: u64(ref.k), Offset: int64(ref.k) * ckRecSize}
				if v.rep.FirstBadEntry != nil && *v.rep.FirstBadEntry < ref.size {
					p.Message = fmt.Sprintf("root does not match the tree of size %d (follows from entry %d above)", ref.size, *v.rep.FirstBadEntry)
				} else {
					p.Message = fmt.Sprintf("root does not match the tree of size %d: an entry in %d..%d was changed (or the checkpoint was)", ref.size, lastGood, ref.size-1)
					v.add(Problem{File: "entries", Entry: u64(lastGood), Message: fmt.Sprintf("first entry not covered by a matching checkpoint; the change is in entries %d..%d", lastGood, ref.size-1)})
				}
				v.add(p)
			}
		}
		if i == committed {
			r, _ := rng.GetRootHash(nil)
			v.rep.Root = base64.StdEncoding.EncodeToString(r)
		}
		// Move to the next record; after a broken header, resynchronise
		// with the index if it points forward.
		switch {
		case recLen >= 0 && (bad == "" || nextIdxOff < 0 || nextIdxOff == off+recLen):
			off += recLen
		case nextIdxOff > off && nextIdxOff < dataSize:
			off = nextIdxOff
			seek(off)
		default:
			off = dataSize
		}
	}
	v.rep.Entries = i
	if committed == 0 && nck == 0 {
		v.rep.Root = base64.StdEncoding.EncodeToString(hasher.EmptyRoot())
	}

	switch {
	case i < committed:
		v.add(Problem{File: "entries", Entry: u64(i), Offset: dataSize,
			Message: fmt.Sprintf("entries %d..%d are missing: the entries file ends at %d bytes but the checkpoints cover %d entries (truncated, or entries deleted)", i, committed-1, dataSize, committed)})
	case i > committed:
		v.add(Problem{File: "entries", Entry: u64(committed), Offset: dataSize,
			Message: fmt.Sprintf("%d records after entry %d are not covered by any checkpoint", i-committed, int64(committed)-1)})
	}
	for ; refi < len(refs); refi++ {
		ref := refs[refi]
		v.add(Problem{File: "checkpoints", Checkpoint: u64(ref.k), Offset: int64(ref.k) * ckRecSize,
			Message: fmt.Sprintf("covers %d entries but only %d exist", ref.size, i)})
	}
	if nidx > i {
		v.add(Problem{File: "index", Entry: u64(i), Offset: int64(i) * indexRecSize, Message: fmt.Sprintf("%d index records have no entry", nidx-i)})
	}
	if ntiles > tilesSeen {
		v.add(Problem{File: "tiles", Offset: int64(tilesSeen) * tileRecSize, Message: fmt.Sprintf("%d subtree hashes have no entries", ntiles-tilesSeen)})
	} else if ntiles < tilesSeen {
		v.add(Problem{File: "tiles", Offset: int64(ntiles) * tileRecSize, Message: fmt.Sprintf("subtree hashes %d..%d are missing", ntiles, tilesSeen-1)})
	}

	wg.Wait()
	v.rep.Signatures = uint64(len(toSign))
	for j, bad := range badSig {
		if bad {
			k := toSign[j]
			v.add(Problem{File: "checkpoints", Checkpoint: u64(k), Offset: int64(k) * ckRecSize,
				Message: fmt.Sprintf("signature (size %d) does not verify with key %s", recs[k].size, l.key.vkey)})
		}
	}
	return nil
}
