// Package ledger is op-dbus's tamper-evident audit log.
//
// Every apply, rollback, snapshot restore and refused request is recorded
// as one Entry. Entries are the leaves of an RFC 6962 / RFC 9162 Merkle
// tree (github.com/transparency-dev/merkle); after every append the log
// signs a checkpoint (tree size and root) with the host's ed25519 key in
// the golang.org/x/mod/sumdb/note format, so that any entry can be proven
// to be in the log (InclusionProof / VerifyReceipt) and any later state of
// the log can be proven to extend an earlier one (ConsistencyProof).
//
// See docs/audit.md for the on-disk format and the guarantees.
package ledger

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Entry is one audit record.
type Entry struct {
	Seq      uint64          `json:"seq"` // 0-based leaf index, set by Append
	Time     time.Time       `json:"time"`
	Kind     string          `json:"kind"`   // "apply", "rollback", "restore", "refused", "drift", "snapshot", ...
	Source   string          `json:"source"` // "cli", "daemon", "api", "mcp"
	Actor    Actor           `json:"actor"`
	Plugins  []string        `json:"plugins,omitempty"`
	Before   string          `json:"before,omitempty"`   // state hash before ("sha256:...")
	After    string          `json:"after,omitempty"`    // state hash after
	Document string          `json:"document,omitempty"` // desired document hash
	Ops      []OpRecord      `json:"ops,omitempty"`
	Verified *bool           `json:"verified,omitempty"`
	Result   string          `json:"result"` // "success", "failed", "rolled-back", "refused", ...
	Message  string          `json:"message,omitempty"`
	Extra    json.RawMessage `json:"extra,omitempty"`
}

// Actor is who caused an entry.
type Actor struct {
	UID    int    `json:"uid"`
	User   string `json:"user,omitempty"`
	Client string `json:"client,omitempty"` // authenticated API/MCP client
}

// OpRecord is one planned operation and its outcome.
type OpRecord struct {
	ID          string          `json:"id"`
	Plugin      string          `json:"plugin"`
	Description string          `json:"description,omitempty"`
	Status      string          `json:"status"`
	Error       string          `json:"error,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

// Errors.
var (
	ErrClosed   = errors.New("audit log is closed")
	ErrNotFound = errors.New("no such audit entry")
	// ErrCorrupt wraps the reason a log refuses to append or prove: a
	// committed part of it does not match its signed checkpoint.
	ErrCorrupt = errors.New("audit log is corrupt")
)

// Files in the log directory.
const (
	fileKey    = "key"     // note signer key, 0600
	fileKeyPub = "key.pub" // note verifier key
	fileLock   = "lock"
	dirRepairs = "repairs"

	indexRecSize = 8 + 32 // u64 offset of the record in entries | leaf hash
	tileRecSize  = 32
)

const (
	fEntries = iota
	fIndex
	fTiles
	fCkpts
	nFiles
)

var fileNames = [nFiles]string{"entries", "index", "tiles", "checkpoints"}

// Log is an open audit log. Its methods are safe for concurrent use, and
// several processes may use the same directory: every operation takes an
// flock on <dir>/lock (exclusive to append or repair, shared to read).
type Log struct {
	mu     sync.Mutex
	dir    string
	key    *keyring
	lockF  *os.File
	f      [nFiles]*os.File
	seen   stamps // the files (and the marker) as this process last saw / wrote them
	stale  bool   // re-check the files at the next operation
	closed bool

	// Committed state (healthy log): n == t.size == last.size.
	t       *tree
	n       uint64 // readable entries
	dataEnd int64
	nck     uint64
	last    ckRecord
	corrupt error
	damage  []Problem // damage found by reconcile that Verify's scan cannot see
	repairs []string

	// ack is the marker as last read or written: the acknowledged state
	// (nothing it covers is ever cut) and the verified prefix.
	ack marker
	// rehashed counts the entries the last reconcile re-hashed (0 when the
	// marker showed that nothing changed).
	rehashed uint64
}

// Open opens (creating if needed, mode 0700) the audit log in dir, normally
// <state-dir>/audit. At first use it creates the signing key dir/key (0600)
// and dir/key.pub.
//
// It repairs an interrupted append: whatever follows the last acknowledged
// and committed entry (a torn record, garbage, complete records whose
// checkpoint was not written, a partial or zero-filled checkpoint record
// after the acknowledged ones) is cut off, the bytes kept under
// dir/repairs/; Repairs lists what was done. An append is acknowledged
// once its checkpoint is synced, and Append records that in the marker
// dir/verified before it returns, so nothing acknowledged is ever cut: a
// checkpoints file shorter than the acknowledged records is damage.
//
// Damage to the acknowledged part of the log is not repaired: Open still
// succeeds so that the log can be read and verified, Corrupt returns the
// reason (naming the file and offset), and Append, InclusionProof and
// ConsistencyProof refuse with an error wrapping ErrCorrupt.
//
// Open is cheap when no log file was written since the marker was
// recorded (it compares the files' inode, size and ctime with the marker);
// otherwise — another program edited a file, a crash left a tail, the log
// was copied, or there is no marker yet — it re-hashes every entry and
// checks every stored hash and checkpoint root (about as long as
// VerifyWith(LatestSignatureOnly)), and records a new marker. Damage that
// changes no ctime is found by VerifyAll.
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := &Log{dir: dir}
	var err error
	if l.lockF, err = os.OpenFile(filepath.Join(dir, fileLock), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if err := flock(l.lockF, true); err != nil {
		l.lockF.Close()
		return nil, err
	}
	defer funlock(l.lockF)
	if err := l.open(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	created, empty := false, true
	for i, name := range fileNames {
		p := filepath.Join(l.dir, name)
		if _, err := os.Stat(p); err != nil {
			created = true
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
		l.f[i] = f
		if fi, err := f.Stat(); err != nil {
			return fmt.Errorf("audit log: %w", err)
		} else if fi.Size() > 0 {
			empty = false
		}
	}
	if created {
		if err := syncDir(l.dir); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
	var err error
	if l.key, err = loadKey(l.dir, empty); err != nil {
		return err
	}
	return l.reconcile()
}

// Close releases the log's files.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var first error
	for _, f := range append(l.f[:], l.lockF) {
		if f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Dir returns the log directory.
func (l *Log) Dir() string { return l.dir }

// Origin returns the log's origin, the first line of its checkpoints and
// the name in its public key: "op-dbus/<host>/audit/<log id>".
func (l *Log) Origin() string { return l.key.origin }

// PublicKey returns the printable verifier key
// ("<origin>+<key hash>+<base64 ed25519 key>", sumdb/note format) used by
// VerifyReceipt, VerifyConsistency and OpenCheckpoint.
func (l *Log) PublicKey() string { return l.key.vkey }

// Repairs returns what Open (or a later reload after another process
// crashed) repaired, one line each; empty if nothing.
func (l *Log) Repairs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.repairs...)
}

// Corrupt returns nil for a healthy log, or why the log refuses to append.
func (l *Log) Corrupt() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.corrupt
}

// Size returns the number of committed entries.
func (l *Log) Size() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if release, err := l.acquire(false); err == nil {
		release()
	}
	return l.n
}

// ---- locking and reloading ----

func flock(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err != syscall.EINTR {
			if err != nil {
				return fmt.Errorf("audit log: lock %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

func funlock(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

// acquire takes the directory lock and makes the in-memory state match the
// files (reloading after another process appended, repairing after one
// crashed). The caller holds l.mu.
func (l *Log) acquire(exclusive bool) (release func(), err error) {
	if l.closed {
		return nil, ErrClosed
	}
	if err := flock(l.lockF, exclusive); err != nil {
		return nil, err
	}
	release = func() { funlock(l.lockF) }
	st, err := l.stamps()
	if err != nil {
		release()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if st == l.seen && !l.stale {
		return release, nil
	}
	if !exclusive {
		if err := flock(l.lockF, true); err != nil {
			release()
			return nil, err
		}
	}
	if err := l.reconcile(); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

func (l *Log) sizes() ([nFiles]int64, error) {
	var s [nFiles]int64
	for i, f := range l.f {
		fi, err := f.Stat()
		if err != nil {
			return s, fmt.Errorf("audit log: %w", err)
		}
		s[i] = fi.Size()
	}
	return s, nil
}

// ---- repair ----

// cut truncates file i at off, keeping the removed bytes under repairs/.
func (l *Log) cut(i int, off int64, why string) error {
	f := l.f[i]
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() <= off {
		return nil
	}
	acked := int64(0)
	switch i {
	case fEntries:
		acked = l.ack.end
	case fCkpts:
		acked = int64(l.ack.nck) * ckRecSize
	}
	if off < acked {
		return fmt.Errorf("audit log: refusing to cut %s at offset %d: its first %d bytes were acknowledged", filepath.Join(l.dir, fileNames[i]), off, acked)
	}
	removed := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(removed, off); err != nil && err != io.EOF {
		return err
	}
	rd := filepath.Join(l.dir, dirRepairs)
	if _, err := os.Stat(rd); err != nil {
		if err := os.Mkdir(rd, 0o700); err != nil {
			return err
		}
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	name := fmt.Sprintf("%s-%s-at-%d.bin", time.Now().UTC().Format("20060102T150405.000000000Z"), fileNames[i], off)
	if err := writeFileAtomic(rd, name, removed, 0o600); err != nil {
		return err
	}
	if err := f.Truncate(off); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	l.repairs = append(l.repairs, fmt.Sprintf("%s: %s; removed %d bytes at offset %d (kept in %s)",
		fileNames[i], why, len(removed), off, filepath.Join(dirRepairs, name)))
	return nil
}

// truncateDerived drops uncommitted records from a derived file (index,
// tiles); they are rebuilt from the entries file.
func (l *Log) truncateDerived(i int, off int64) error {
	if err := l.f[i].Truncate(off); err != nil {
		return err
	}
	return l.f[i].Sync()
}

// reconcile makes the state consistent after a crash and loads it. It runs
// under the exclusive lock. Damage to committed data sets l.corrupt.
//
// What may be cut is decided by the acknowledged state in the marker
// (marker.go): a checkpoint record it counts was synced before its Append
// returned, so losing any part of it is damage, never a crash. Only bytes
// beyond both the acknowledged state and the last complete, valid
// checkpoint are the tail of an append that was never acknowledged.
//
// Unless the marker shows that no file was written since it was recorded,
// every entry is then re-hashed and checked against the signed root.
func (l *Log) reconcile() error {
	l.corrupt, l.damage, l.rehashed, l.stale = nil, nil, 0, false
	st, err := l.stamps()
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	sizes := st.sizes()
	mk, mkState := l.readMarker()
	if mkState != markerOK {
		mk = marker{}
	}
	l.ack = mk

	// Checkpoints: every acknowledged one must be there, whole.
	ckSize := sizes[fCkpts]
	if ackBytes := int64(mk.nck) * ckRecSize; ckSize < ackBytes {
		k := uint64(ckSize / ckRecSize)
		return l.failAt(Problem{File: "checkpoints", Checkpoint: u64(k), Offset: int64(k) * ckRecSize,
			Message: fmt.Sprintf("the file is %d bytes, but %d checkpoints (%d bytes) were acknowledged, the last covering %d entries: checkpoint %d is incomplete or missing, so the file was truncated (acknowledged checkpoints are synced before Append returns, a crash cannot lose them)",
				ckSize, mk.nck, ackBytes, mk.size, k)})
	}
	if rem := ckSize % ckRecSize; rem != 0 {
		if err := l.cut(fCkpts, ckSize-rem, "torn partial checkpoint record at the end, after the last acknowledged one (interrupted append)"); err != nil {
			return err
		}
		ckSize -= rem
	}
	nck := uint64(ckSize / ckRecSize)
	var last ckRecord
	if nck > 0 {
		b, err := l.pread(fCkpts, int64(nck-1)*ckRecSize, ckRecSize)
		if err != nil {
			return err
		}
		r, derr := decodeCk(b)
		if derr != nil && looksTorn(b) && nck > mk.nck {
			if err := l.cut(fCkpts, int64(nck-1)*ckRecSize, fmt.Sprintf("checkpoint %d is zero-filled and was never acknowledged (interrupted append)", nck-1)); err != nil {
				return err
			}
			nck--
			if nck > 0 {
				if b, err = l.pread(fCkpts, int64(nck-1)*ckRecSize, ckRecSize); err != nil {
					return err
				}
				r, derr = decodeCk(b)
			}
		}
		if nck > 0 {
			if derr != nil {
				return l.fail(fmt.Errorf("checkpoint %d (checkpoints, offset %d): %v: the checkpoints file was modified", nck-1, int64(nck-1)*ckRecSize, derr))
			}
			if !l.key.verifyCk(&r) {
				return l.fail(fmt.Errorf("checkpoint %d (checkpoints, offset %d; size %d): signature does not verify with key %s", nck-1, int64(nck-1)*ckRecSize, r.size, l.key.vkey))
			}
			last = r
		}
	}
	// The last acknowledged checkpoint must still be the one acknowledged.
	if mk.nck > 0 {
		k := mk.nck - 1
		r := last
		if k != nck-1 {
			b, err := l.pread(fCkpts, int64(k)*ckRecSize, ckRecSize)
			if err != nil {
				return err
			}
			var derr error
			if r, derr = decodeCk(b); derr != nil {
				return l.fail(fmt.Errorf("checkpoint %d (checkpoints, offset %d): %v: the checkpoints file was modified", k, int64(k)*ckRecSize, derr))
			}
		}
		if r.size != mk.size || r.root != mk.root {
			return l.failAt(Problem{File: "checkpoints", Checkpoint: u64(k), Offset: int64(k) * ckRecSize,
				Message: fmt.Sprintf("is for %d entries with root %s, but the checkpoint acknowledged at this position was for %d entries with root %s: the checkpoints file was rewritten",
					r.size, b64(r.root[:]), mk.size, b64(mk.root[:]))})
		}
	}
	var C uint64
	if nck > 0 {
		C = last.size
	}

	// Index: at least C records; anything after them is uncommitted.
	if ni := uint64(sizes[fIndex] / indexRecSize); ni < C {
		return l.fail(fmt.Errorf("index has %d records but checkpoint %d covers %d entries: the index file was truncated", ni, nck-1, C))
	}
	if sizes[fIndex] > int64(C)*indexRecSize {
		if err := l.truncateDerived(fIndex, int64(C)*indexRecSize); err != nil {
			return err
		}
	}
	// Tiles: exactly C/256 hashes are committed.
	if nt := uint64(sizes[fTiles] / tileRecSize); nt < C/tileWidth {
		return l.fail(fmt.Errorf("tiles file has %d subtree hashes but checkpoint %d needs %d: the tiles file was truncated", nt, nck-1, C/tileWidth))
	}
	if sizes[fTiles] > int64(C/tileWidth)*tileRecSize {
		if err := l.truncateDerived(fTiles, int64(C/tileWidth)*tileRecSize); err != nil {
			return err
		}
	}

	// Entries: the last committed record must be intact.
	var end int64
	if C > 0 {
		off, leaf, err := l.readIndex(C - 1)
		if err != nil {
			return err
		}
		payload, err := l.readRecordAt(off, sizes[fEntries])
		if err != nil {
			return l.fail(fmt.Errorf("entry %d (entries, offset %d): %v: the entries file was truncated or modified", C-1, off, err))
		}
		if err := checkPayload(C-1, payload, leaf); err != nil {
			return l.fail(err)
		}
		end = off + recordHeaderSize + int64(len(payload))
	}
	if end < mk.end {
		p := Problem{File: "entries", Offset: end,
			Message: fmt.Sprintf("the committed entries end at offset %d, before the end of the acknowledged entries (%d): the entries or index file was modified", end, mk.end)}
		if C > 0 {
			p.Entry = u64(C - 1)
		}
		return l.failAt(p)
	}
	if err := l.load(C, end, nck, last); err != nil {
		return l.fail(err)
	}

	// Anything after the committed end was written by an append that did
	// not finish (it was never acknowledged): cut it, keeping the bytes.
	if sizes[fEntries] > end {
		if err := l.cut(fEntries, end, l.describeTail(end, sizes[fEntries])); err != nil {
			return err
		}
	}

	// Nothing to re-hash while the files are exactly as the marker saw
	// them: whatever they hold was verified then.
	if mkState == markerOK && mk.files == st.files() {
		if mk.damage != "" {
			// Not a Problem of its own: Verify looks again (and clears it
			// when it finds nothing).
			return l.fail(fmt.Errorf("a verification found damage and the log files have not changed since: %s", mk.damage))
		}
		if mk.size == l.n && mk.nck == l.nck && mk.end == l.dataEnd {
			l.seen = st
			return nil
		}
	}
	// Something wrote to the log since the marker (another program, a
	// crash, a copy), or there is no marker: re-hash every entry and check
	// every stored hash and checkpoint root.
	v := &verifyState{}
	if err := l.verify(v, VerifyOptions{LatestSignatureOnly: true}); err != nil {
		return err
	}
	l.rehashed = v.rep.Entries
	if n := len(v.rep.Problems) + v.rep.MoreProblems; n > 0 {
		reason := v.rep.Problems[0].String()
		if n > 1 {
			reason += fmt.Sprintf(" (and %d more problem(s))", n-1)
		}
		return l.fail(errors.New(reason))
	}
	l.markCommitted("")
	return nil
}

// describeTail says what lies after the committed end of the entries file.
func (l *Log) describeTail(end, size int64) string {
	r := bufio.NewReaderSize(io.NewSectionReader(l.f[fEntries], end, size-end), 1<<16)
	complete := 0
	off := end
	for off < size {
		var h [recordHeaderSize]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			break
		}
		n, sum, err := parseHeader(h[:])
		if err != nil || int64(n) > size-off-recordHeaderSize {
			break
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil || checksum(payload) != sum {
			break
		}
		complete++
		off += recordHeaderSize + int64(n)
	}
	what := fmt.Sprintf("%d complete record(s)", complete)
	if off < size {
		what += fmt.Sprintf(" and %d bytes of a torn or invalid record", size-off)
	}
	return fmt.Sprintf("%s after entry %d not covered by a checkpoint (an append was interrupted before it was acknowledged)", what, int64(l.n)-1)
}

// fail records damage to the committed log and leaves a read-only state.
func (l *Log) fail(reason error) error {
	l.corrupt = fmt.Errorf("%w (%s): %v (nothing was cut or changed; run `op-dbus audit verify` for a full report; nothing can be appended until the audit directory is restored from a backup)", ErrCorrupt, l.dir, reason)
	l.t = nil
	st, err := l.stamps()
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	sizes := st.sizes()
	l.n = uint64(sizes[fIndex] / indexRecSize)
	l.dataEnd = sizes[fEntries]
	l.nck = uint64(sizes[fCkpts] / ckRecSize)
	l.seen = st
	return nil
}

// failAt is fail for damage that a scan of the files alone cannot see
// (it needs the marker); Verify reports it.
func (l *Log) failAt(p Problem) error {
	l.damage = append(l.damage, p)
	return l.fail(errors.New(p.String()))
}

// load builds the in-memory tree for C committed entries and checks it
// against the latest checkpoint.
func (l *Log) load(C uint64, end int64, nck uint64, last ckRecord) error {
	nt := C / tileWidth
	tb, err := l.pread(fTiles, 0, int(nt)*tileRecSize)
	if err != nil {
		return fmt.Errorf("tiles: %v", err)
	}
	tiles := make([][]byte, nt)
	for i := range tiles {
		tiles[i] = tb[i*tileRecSize : (i+1)*tileRecSize : (i+1)*tileRecSize]
	}
	tailStart := nt * tileWidth
	ib, err := l.pread(fIndex, int64(tailStart)*indexRecSize, int(C-tailStart)*indexRecSize)
	if err != nil {
		return fmt.Errorf("index: %v", err)
	}
	var tail [][]byte
	for i := 0; i < len(ib); i += indexRecSize {
		tail = append(tail, ib[i+8:i+indexRecSize:i+indexRecSize])
	}
	t, err := buildTree(C, tiles, tail)
	if err != nil {
		return err
	}
	if nck > 0 && !bytes.Equal(t.root(), last.root[:]) {
		return fmt.Errorf("the stored tree hashes (index and tiles files) do not give the root signed in checkpoint %d (size %d)", nck-1, C)
	}
	l.t, l.n, l.dataEnd, l.nck, l.last = t, C, end, nck, last
	return nil
}

// ---- file helpers ----

func (l *Log) pread(i int, off int64, n int) ([]byte, error) {
	b := make([]byte, n)
	if n == 0 {
		return b, nil
	}
	if _, err := l.f[i].ReadAt(b, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: read %d bytes at %d: %w", fileNames[i], n, off, err)
	}
	return b, nil
}

func (l *Log) readIndex(seq uint64) (off int64, leaf []byte, err error) {
	b, err := l.pread(fIndex, int64(seq)*indexRecSize, indexRecSize)
	if err != nil {
		return 0, nil, err
	}
	return int64(binary.BigEndian.Uint64(b[:8])), b[8:], nil
}

// readGroup returns the leaf hashes of complete group g from the index.
func (l *Log) readGroup(g uint64) ([][]byte, error) {
	b, err := l.pread(fIndex, int64(g*tileWidth)*indexRecSize, tileWidth*indexRecSize)
	if err != nil {
		return nil, err
	}
	hs := make([][]byte, tileWidth)
	for i := range hs {
		hs[i] = b[i*indexRecSize+8 : (i+1)*indexRecSize]
	}
	return hs, nil
}

// readRecordAt reads and checks the record at off in the entries file.
func (l *Log) readRecordAt(off, fileSize int64) ([]byte, error) {
	var h [recordHeaderSize]byte
	if off < 0 || off+recordHeaderSize > fileSize {
		return nil, fmt.Errorf("record header at %d is past the end of the file (%d bytes)", off, fileSize)
	}
	if _, err := l.f[fEntries].ReadAt(h[:], off); err != nil {
		return nil, err
	}
	n, sum, err := parseHeader(h[:])
	if err != nil {
		return nil, err
	}
	if off+recordHeaderSize+int64(n) > fileSize {
		return nil, fmt.Errorf("record of %d bytes runs past the end of the file (%d bytes)", n, fileSize)
	}
	payload := make([]byte, n)
	if _, err := l.f[fEntries].ReadAt(payload, off+recordHeaderSize); err != nil {
		return nil, err
	}
	if checksum(payload) != sum {
		return nil, errBadChecksum
	}
	return payload, nil
}

// checkPayload checks a record's sequence number and leaf hash.
func checkPayload(seq uint64, payload, leaf []byte) error {
	if s, ok := parseSeq(payload); !ok || s != seq {
		return fmt.Errorf("entry %d: the record holds %s: entries were deleted, duplicated or reordered", seq, seqString(s, ok))
	}
	if leaf != nil && !bytes.Equal(hasher.HashLeaf(payload), leaf) {
		return fmt.Errorf("entry %d: its hash differs from the leaf hash in the index", seq)
	}
	return nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func seqString(s uint64, ok bool) string {
	if !ok {
		return "no valid sequence number"
	}
	return "entry " + strconv.FormatUint(s, 10)
}

func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return fmt.Errorf("audit log: fdatasync %s: %w", f.Name(), err)
			}
			return nil
		}
	}
}

// ---- append ----

// Append redacts e (see Redact), assigns its sequence number, appends it,
// syncs it to disk and signs a new checkpoint. When Append returns nil the
// entry survives a crash or power loss.
func (l *Log) Append(e Entry) (uint64, error) {
	seqs, err := l.AppendBatch([]Entry{e})
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// AppendBatch appends several entries with one sync and one checkpoint.
func (l *Log) AppendBatch(es []Entry) ([]uint64, error) {
	if len(es) == 0 {
		return nil, nil
	}
	// Encode (and redact) outside the locks; the sequence number, the
	// first member of every entry, is filled in under the lock.
	bodies := make([][]byte, len(es))
	for i := range es {
		b, err := encodeBody(es[i])
		if err != nil {
			return nil, fmt.Errorf("audit entry %d of batch: %w", i, err)
		}
		bodies[i] = b
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(true)
	if err != nil {
		return nil, err
	}
	defer release()
	if l.corrupt != nil {
		return nil, l.corrupt
	}
	if l.key.signer == nil {
		return nil, fmt.Errorf("%w: %s is missing; the log can be read and verified but not extended", ErrNoKey, filepath.Join(l.dir, fileKey))
	}

	base := l.n
	seqs := make([]uint64, len(es))
	offs := make([]int64, len(es))
	leaves := make([][]byte, len(es))
	size := 0
	for _, b := range bodies {
		size += recordHeaderSize + len(seqPrefix) + 20 + len(b)
	}
	buf := make([]byte, 0, size)
	payload := make([]byte, 0, 1024)
	for i, b := range bodies {
		seqs[i] = base + uint64(i)
		payload = append(strconv.AppendUint(append(payload[:0], seqPrefix...), seqs[i], 10), b...)
		offs[i] = l.dataEnd + int64(len(buf))
		leaves[i] = hasher.HashLeaf(payload)
		buf = appendRecord(buf, payload)
	}
	newEnd := l.dataEnd + int64(len(buf))

	err = func() error {
		if _, err := l.f[fEntries].WriteAt(buf, l.dataEnd); err != nil {
			return fmt.Errorf("audit log: write entries: %w", err)
		}
		if err := l.writeIndex(offs, leaves); err != nil {
			return err
		}
		var wg sync.WaitGroup
		var syncErr [2]error
		wg.Add(1)
		go func() { defer wg.Done(); syncErr[1] = fdatasync(l.f[fIndex]) }()
		syncErr[0] = fdatasync(l.f[fEntries])
		wg.Wait()
		if err := errors.Join(syncErr[0], syncErr[1]); err != nil {
			return err
		}
		return l.commit(leaves, newEnd)
	}()
	if err != nil {
		l.undo()
		return nil, err
	}
	return seqs, nil
}

func (l *Log) writeIndex(offs []int64, leaves [][]byte) error {
	b := make([]byte, len(offs)*indexRecSize)
	for i := range offs {
		r := b[i*indexRecSize:]
		binary.BigEndian.PutUint64(r[:8], uint64(offs[i]))
		copy(r[8:indexRecSize], leaves[i])
	}
	if _, err := l.f[fIndex].WriteAt(b, int64(l.n)*indexRecSize); err != nil {
		return fmt.Errorf("audit log: write index: %w", err)
	}
	return nil
}

// commit adds leaves (already written and synced to the entries and index
// files) to the tree, writes new tile hashes and signs and writes the
// checkpoint that commits them.
func (l *Log) commit(leaves [][]byte, newEnd int64) error {
	m := l.t.mark()
	oldTiles := l.t.tiles()
	err := func() error {
		for _, h := range leaves {
			if err := l.t.append(h); err != nil {
				return err
			}
		}
		if nt := l.t.tiles(); nt > oldTiles {
			b := make([]byte, 0, (nt-oldTiles)*tileRecSize)
			for _, h := range l.t.upper[0][oldTiles:] {
				b = append(b, h...)
			}
			if _, err := l.f[fTiles].WriteAt(b, int64(oldTiles)*tileRecSize); err != nil {
				return fmt.Errorf("audit log: write tiles: %w", err)
			}
			if err := fdatasync(l.f[fTiles]); err != nil {
				return err
			}
		}
		rec, err := l.key.sign(l.t.size, l.t.root())
		if err != nil {
			return fmt.Errorf("audit log: sign checkpoint: %w", err)
		}
		if _, err := l.f[fCkpts].WriteAt(rec.encode(), int64(l.nck)*ckRecSize); err != nil {
			return fmt.Errorf("audit log: write checkpoint: %w", err)
		}
		if err := fdatasync(l.f[fCkpts]); err != nil {
			return err
		}
		l.last = rec
		return nil
	}()
	if err != nil {
		l.t.restore(m)
		return err
	}
	l.nck++
	l.n = l.t.size
	l.dataEnd = newEnd
	l.markCommitted("")
	return nil
}

// undo removes what a failed append wrote after the committed state.
func (l *Log) undo() {
	_ = l.f[fCkpts].Truncate(int64(l.nck) * ckRecSize)
	if l.t != nil {
		_ = l.f[fTiles].Truncate(int64(l.t.tiles()) * tileRecSize)
	}
	_ = l.f[fIndex].Truncate(int64(l.n) * indexRecSize)
	_ = l.f[fEntries].Truncate(l.dataEnd)
	l.stale = true // re-check the files at the next operation
}

// encodeBody returns the canonical JSON of the redacted entry without its
// leading `{"seq":N`.
func encodeBody(e Entry) ([]byte, error) {
	e = redactEntry(e)
	e.Seq = 0
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	b, err := marshalCompact(e)
	if err != nil {
		return nil, err
	}
	const zero = seqPrefix + "0"
	if !bytes.HasPrefix(b, []byte(zero)) {
		return nil, fmt.Errorf("unexpected canonical encoding %.20q", b)
	}
	if len(b)+20 > MaxEntrySize {
		return nil, fmt.Errorf("entry of %d bytes exceeds the limit of %d bytes", len(b), MaxEntrySize)
	}
	return b[len(zero):], nil
}

func redactEntry(e Entry) Entry {
	e.Message = RedactText(e.Message)
	e.Actor.Client = RedactText(e.Actor.Client)
	if len(e.Extra) > 0 {
		e.Extra = Redact(e.Extra)
	}
	if len(e.Ops) > 0 {
		ops := make([]OpRecord, len(e.Ops))
		for i, op := range e.Ops {
			op.Description = RedactText(op.Description)
			op.Error = RedactText(op.Error)
			if len(op.Data) > 0 {
				op.Data = Redact(op.Data)
			}
			ops[i] = op
		}
		e.Ops = ops
	}
	return e
}

// ---- reading ----

// Get returns entry seq.
func (l *Log) Get(seq uint64) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	release, err := l.acquire(false)
	if err != nil {
		return Entry{}, err
	}
	defer release()
	if seq >= l.n {
		return Entry{}, fmt.Errorf("%w: entry %d (the log has %d entries)", ErrNotFound, seq, l.n)
	}
	payload, err := l.readEntry(seq)
	if err != nil {
		return Entry{}, err
	}
	return decodeEntry(seq, payload)
}

func (l *Log) readEntry(seq uint64) ([]byte, error) {
	off, leaf, err := l.readIndex(seq)
	if err != nil {
		return nil, err
	}
	fi, err := l.f[fEntries].Stat()
	if err != nil {
		return nil, err
	}
	payload, err := l.readRecordAt(off, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("%w: entry %d at offset %d: %v", ErrCorrupt, seq, off, err)
	}
	if err := checkPayload(seq, payload, leaf); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return payload, nil
}

func decodeEntry(seq uint64, payload []byte) (Entry, error) {
	var e Entry
	if err := json.Unmarshal(payload, &e); err != nil {
		return Entry{}, fmt.Errorf("%w: entry %d: %v", ErrCorrupt, seq, err)
	}
	return e, nil
}

// Entries returns the committed entries from seq from onwards for which
// filter (if not nil) returns true.
func (l *Log) Entries(from uint64, filter func(Entry) bool) ([]Entry, error) {
	var out []Entry
	err := l.Each(from, func(e Entry) error {
		if filter == nil || filter(e) {
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Each calls fn for every committed entry from seq from onwards, in order,
// streaming from disk. An error from fn stops the iteration and is
// returned. Each sees the entries committed when it started.
func (l *Log) Each(from uint64, fn func(Entry) error) error {
	l.mu.Lock()
	release, err := l.acquire(false)
	if err != nil {
		l.mu.Unlock()
		return err
	}
	n := l.n
	var off int64
	if from < n {
		off, _, err = l.readIndex(from)
	}
	f := l.f[fEntries]
	release()
	l.mu.Unlock()
	if err != nil || from >= n {
		return err
	}
	// The committed part of the files is immutable, so it is read
	// without holding the lock.
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, off, fi.Size()-off), 1<<20)
	var h [recordHeaderSize]byte
	var payload []byte
	for seq := from; seq < n; seq++ {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return fmt.Errorf("%w: entry %d at offset %d: %v", ErrCorrupt, seq, off, err)
		}
		ln, sum, err := parseHeader(h[:])
		if err != nil {
			return fmt.Errorf("%w: entry %d at offset %d: %v", ErrCorrupt, seq, off, err)
		}
		if cap(payload) < ln {
			payload = make([]byte, ln)
		}
		payload = payload[:ln]
		if _, err := io.ReadFull(r, payload); err != nil {
			return fmt.Errorf("%w: entry %d at offset %d: %v", ErrCorrupt, seq, off, err)
		}
		if checksum(payload) != sum {
			return fmt.Errorf("%w: entry %d at offset %d: %v", ErrCorrupt, seq, off, errBadChecksum)
		}
		if err := checkPayload(seq, payload, nil); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		e, err := decodeEntry(seq, payload)
		if err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
		off += recordHeaderSize + int64(ln)
	}
	return nil
}

// Exists reports whether an audit log has been written in dir (Open would
// create one).
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, fileNames[0]))
	return err == nil
}
