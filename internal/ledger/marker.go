package ledger

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
)

// The marker file (dir/verified) is what lets Open stay cheap without
// trusting damage it has not looked at, and what tells a crash tail from
// a truncation. It records:
//
//   - the acknowledged state: the number of checkpoint records nck and the
//     tree size and root of the last of them. Append writes it after the
//     checkpoint is synced and before it returns, so everything it covers
//     was acknowledged; a repair never cuts below it, and a checkpoints
//     file shorter than nck records is damage, not a torn write.
//   - the verified prefix: entries 0..size-1 (bytes 0..end of the entries
//     file) were re-hashed and found to give the signed root (by a full
//     check at Open or by Verify), or were written by Append itself on top
//     of such a prefix.
//   - a fingerprint (inode, size, ctime) of the four log files as they
//     were when the marker was written. Writing a file changes its ctime,
//     so while the fingerprint still matches, nothing has written to the
//     log since the marker and Open re-hashes nothing. When it does not
//     match (another program wrote a file, a crash left a tail, the files
//     were copied), Open re-hashes every entry once and writes a new
//     marker.
//   - damage found by Verify that Open's checks would not see (bit rot does
//     not change a ctime), so that every process refuses to append.
//
// The marker is a local cache and local evidence, not a security boundary:
// whoever can write the audit directory can edit or delete it (see
// docs/audit.md, "What a local attacker can hide"). A missing or unreadable
// marker makes Open fall back to a full re-hash and to taking the last
// complete checkpoint as the acknowledged state.
//
// Layout (big-endian), markerSize bytes, rewritten in place:
//
//	8  magic "opdbusV1"
//	8  size     8 end     8 nck     32 root
//	4 × (8 inode | 8 size | 8 ctime ns)  for entries, index, tiles, checkpoints
//	2  damage length | 256 damage text
//	4  CRC-32C of the preceding bytes
const (
	fileMarker     = "verified"
	markerMagic    = "opdbusV1"
	markerDamage   = 256
	markerStampOff = 8 + 8 + 8 + 8 + 32
	markerSize     = markerStampOff + nFiles*24 + 2 + markerDamage + 4
)

// stamp identifies the content of a file cheaply: any write changes its
// ctime (and a replaced file has another inode).
type stamp struct {
	ino   uint64
	size  int64
	ctime int64 // ns
}

func stampOf(fi os.FileInfo) stamp {
	s := stamp{size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = uint64(st.Ino)
		s.ctime = int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec)
	}
	return s
}

// stamps are the log files' stamps followed by the marker's.
type stamps [nFiles + 1]stamp

func (s *stamps) sizes() [nFiles]int64 {
	var z [nFiles]int64
	for i := range z {
		z[i] = s[i].size
	}
	return z
}

func (s *stamps) files() [nFiles]stamp { return [nFiles]stamp(s[:nFiles]) }

type marker struct {
	size   uint64
	end    int64
	nck    uint64
	root   [32]byte
	files  [nFiles]stamp
	damage string
}

type markerState int

const (
	markerMissing markerState = iota
	markerInvalid
	markerOK
)

func (m *marker) encode() []byte {
	b := make([]byte, markerSize)
	copy(b, markerMagic)
	binary.BigEndian.PutUint64(b[8:], m.size)
	binary.BigEndian.PutUint64(b[16:], uint64(m.end))
	binary.BigEndian.PutUint64(b[24:], m.nck)
	copy(b[32:64], m.root[:])
	for i, s := range m.files {
		p := b[markerStampOff+24*i:]
		binary.BigEndian.PutUint64(p, s.ino)
		binary.BigEndian.PutUint64(p[8:], uint64(s.size))
		binary.BigEndian.PutUint64(p[16:], uint64(s.ctime))
	}
	d := m.damage
	if len(d) > markerDamage {
		d = d[:markerDamage-3] + "..."
	}
	p := b[markerStampOff+24*nFiles:]
	binary.BigEndian.PutUint16(p, uint16(len(d)))
	copy(p[2:], d)
	binary.BigEndian.PutUint32(b[markerSize-4:], checksum(b[:markerSize-4]))
	return b
}

func decodeMarker(b []byte) (marker, bool) {
	var m marker
	if len(b) != markerSize || !bytes.Equal(b[:8], []byte(markerMagic)) ||
		binary.BigEndian.Uint32(b[markerSize-4:]) != checksum(b[:markerSize-4]) {
		return m, false
	}
	m.size = binary.BigEndian.Uint64(b[8:])
	m.end = int64(binary.BigEndian.Uint64(b[16:]))
	m.nck = binary.BigEndian.Uint64(b[24:])
	copy(m.root[:], b[32:64])
	for i := range m.files {
		p := b[markerStampOff+24*i:]
		m.files[i] = stamp{binary.BigEndian.Uint64(p), int64(binary.BigEndian.Uint64(p[8:])), int64(binary.BigEndian.Uint64(p[16:]))}
	}
	p := b[markerStampOff+24*nFiles:]
	n := int(binary.BigEndian.Uint16(p))
	if n > markerDamage || m.end < 0 {
		return m, false
	}
	m.damage = string(p[2 : 2+n])
	return m, true
}

func (l *Log) markerPath() string { return filepath.Join(l.dir, fileMarker) }

func (l *Log) readMarker() (marker, markerState) {
	b, err := os.ReadFile(l.markerPath())
	if err != nil {
		if os.IsNotExist(err) {
			return marker{}, markerMissing
		}
		return marker{}, markerInvalid
	}
	m, ok := decodeMarker(b)
	if !ok {
		return marker{}, markerInvalid
	}
	return m, markerOK
}

// writeMarker rewrites the marker in place. It is not synced: after a
// power loss it may be older than the log (or unreadable), which costs one
// full re-hash at the next Open and narrows what Open can tell apart, but
// never makes Open cut or trust anything it should not. An error is
// ignored by the callers for the same reason (a read-only copy of a log
// cannot record a marker).
func (l *Log) writeMarker(m marker) error {
	f, err := os.OpenFile(l.markerPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	b := m.encode()
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return err
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > int64(len(b)) {
		_ = f.Truncate(int64(len(b)))
	}
	return f.Close()
}

// stamps returns the stamps of the log files (from the open descriptors)
// and of the marker (by path; zero if it does not exist).
func (l *Log) stamps() (stamps, error) {
	var s stamps
	for i, f := range l.f {
		fi, err := f.Stat()
		if err != nil {
			return s, err
		}
		s[i] = stampOf(fi)
	}
	if fi, err := os.Stat(l.markerPath()); err == nil {
		s[nFiles] = stampOf(fi)
	}
	return s, nil
}

// markCommitted records the in-memory committed state (verified, and
// acknowledged once the caller returns) in the marker, keeping damage if
// given, and remembers the resulting stamps.
func (l *Log) markCommitted(damage string) {
	st, err := l.stamps()
	if err != nil {
		l.stale = true
		return
	}
	m := marker{size: l.n, end: l.dataEnd, nck: l.nck, root: l.last.root, files: st.files(), damage: damage}
	if l.nck == 0 {
		copy(m.root[:], hasher.EmptyRoot())
	}
	_ = l.writeMarker(m)
	if st, err = l.stamps(); err != nil {
		l.stale = true
		return
	}
	l.seen = st
	l.ack = m
}
