package ledger

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// A checkpoint record in the checkpoints file is fixed size:
//
//	u64 tree size | 32-byte root | u32 key hash | 64-byte ed25519 signature | u32 CRC-32C of the preceding 108 bytes
//
// The signature is the note signature over the checkpoint body
// "<origin>\n<size>\n<base64 root>\n", so the signed note (the
// transparency-dev checkpoint format) is rebuilt byte for byte from the
// record and the origin.
const ckRecSize = 8 + 32 + 4 + 64 + 4

type ckRecord struct {
	size    uint64
	root    [32]byte
	keyHash uint32
	sig     [64]byte
}

func (r *ckRecord) encode() []byte {
	b := make([]byte, ckRecSize)
	binary.BigEndian.PutUint64(b[0:8], r.size)
	copy(b[8:40], r.root[:])
	binary.BigEndian.PutUint32(b[40:44], r.keyHash)
	copy(b[44:108], r.sig[:])
	binary.BigEndian.PutUint32(b[108:112], checksum(b[:108]))
	return b
}

var errCkChecksum = errors.New("checksum mismatch")

func decodeCk(b []byte) (ckRecord, error) {
	var r ckRecord
	if len(b) != ckRecSize {
		return r, fmt.Errorf("short record (%d bytes)", len(b))
	}
	if binary.BigEndian.Uint32(b[108:112]) != checksum(b[:108]) {
		return r, errCkChecksum
	}
	r.size = binary.BigEndian.Uint64(b[0:8])
	copy(r.root[:], b[8:40])
	r.keyHash = binary.BigEndian.Uint32(b[40:44])
	copy(r.sig[:], b[44:108])
	return r, nil
}

// looksTorn reports whether a checkpoint record that failed its checksum
// looks like an interrupted write (its tail, including the checksum field,
// is zero-filled) rather than a modification.
func looksTorn(b []byte) bool {
	return len(b) == ckRecSize && binary.BigEndian.Uint32(b[108:112]) == 0
}

func checkpointBody(origin string, size uint64, root []byte) string {
	return origin + "\n" + strconv.FormatUint(size, 10) + "\n" + base64.StdEncoding.EncodeToString(root) + "\n"
}

func (k *keyring) sign(size uint64, root []byte) (ckRecord, error) {
	r := ckRecord{size: size, keyHash: k.signer.KeyHash()}
	copy(r.root[:], root)
	sig, err := k.signer.Sign([]byte(checkpointBody(k.origin, size, root)))
	if err != nil {
		return r, err
	}
	if len(sig) != 64 {
		return r, fmt.Errorf("unexpected signature length %d", len(sig))
	}
	copy(r.sig[:], sig)
	return r, nil
}

func (k *keyring) verifyCk(r *ckRecord) bool {
	return r.keyHash == k.verifier.KeyHash() &&
		k.verifier.Verify([]byte(checkpointBody(k.origin, r.size, r.root[:])), r.sig[:])
}

// signedNote renders the record as a signed note.
func (k *keyring) signedNote(r *ckRecord) string {
	var hs [4 + 64]byte
	binary.BigEndian.PutUint32(hs[:4], r.keyHash)
	copy(hs[4:], r.sig[:])
	return checkpointBody(k.origin, r.size, r.root[:]) + "\n— " + k.origin + " " + base64.StdEncoding.EncodeToString(hs[:]) + "\n"
}

func (k *keyring) signed(r *ckRecord) SignedCheckpoint {
	return SignedCheckpoint{Origin: k.origin, Size: r.size, Root: append([]byte(nil), r.root[:]...), Note: k.signedNote(r)}
}

// SignedCheckpoint is a signed statement of the log's tree size and root
// hash. Note is the checkpoint in the transparency-dev checkpoint format
// ("<origin>\n<size>\n<base64 root>\n"), signed as a golang.org/x/mod
// sumdb/note with the log's ed25519 key; it is the authoritative form,
// the other fields repeat its content.
type SignedCheckpoint struct {
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   []byte `json:"root"`
	Note   string `json:"note"`
}

// OpenCheckpoint verifies a signed checkpoint note with publicKey and
// returns its content. It fails with a clear error when the note was
// signed by another key (another log) or was modified.
func OpenCheckpoint(signedNote, publicKey string) (SignedCheckpoint, error) {
	v, err := parseVerifier(publicKey)
	if err != nil {
		return SignedCheckpoint{}, err
	}
	return openCheckpoint(signedNote, v)
}

func openCheckpoint(signedNote string, v note.Verifier) (SignedCheckpoint, error) {
	n, err := note.Open([]byte(signedNote), note.VerifierList(v))
	if err != nil {
		var unv *note.UnverifiedNoteError
		var inv *note.InvalidSignatureError
		switch {
		case errors.As(err, &unv):
			var by []string
			for _, s := range unv.Note.UnverifiedSigs {
				by = append(by, fmt.Sprintf("%s (key %08x)", s.Name, s.Hash))
			}
			return SignedCheckpoint{}, fmt.Errorf("checkpoint is signed by %s, not by the given key %s (key %08x): it belongs to another log, or the key is wrong",
				strings.Join(by, ", "), v.Name(), v.KeyHash())
		case errors.As(err, &inv):
			return SignedCheckpoint{}, fmt.Errorf("checkpoint signature is invalid for key %s: the checkpoint was modified", v.Name())
		default:
			return SignedCheckpoint{}, fmt.Errorf("checkpoint is not a valid signed note: %v", err)
		}
	}
	origin, size, root, err := parseCheckpointBody(n.Text)
	if err != nil {
		return SignedCheckpoint{}, err
	}
	if origin != v.Name() {
		return SignedCheckpoint{}, fmt.Errorf("checkpoint origin %q does not match the key's name %q", origin, v.Name())
	}
	return SignedCheckpoint{Origin: origin, Size: size, Root: root, Note: signedNote}, nil
}

func parseCheckpointBody(text string) (origin string, size uint64, root []byte, err error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 {
		return "", 0, nil, errors.New("checkpoint body has fewer than 3 lines (want origin, size, root)")
	}
	origin = lines[0]
	size, err = strconv.ParseUint(lines[1], 10, 64)
	if err != nil || lines[1] != strconv.FormatUint(size, 10) {
		return "", 0, nil, fmt.Errorf("checkpoint size %q is not a decimal number", lines[1])
	}
	root, err = base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 || !bytes.Equal([]byte(base64.StdEncoding.EncodeToString(root)), []byte(lines[2])) {
		return "", 0, nil, fmt.Errorf("checkpoint root %q is not a base64 SHA-256 hash", lines[2])
	}
	return origin, size, root, nil
}
