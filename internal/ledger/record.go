package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
)

// Record framing of the entries file.
//
// Each entry is stored as one record:
//
//	u32 big-endian payload length | u32 big-endian CRC-32C of payload | payload
//
// The payload is the canonical JSON of the entry, which is also exactly the
// bytes hashed into the Merkle leaf.
const (
	recordHeaderSize = 8
	// MaxEntrySize bounds one canonical entry. A length field larger than
	// this is treated as corruption rather than an allocation request.
	MaxEntrySize = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Errors returned by decodeRecord.
var (
	errShortHeader  = errors.New("incomplete record header")
	errBadLength    = errors.New("record length out of range")
	errShortPayload = errors.New("incomplete record payload")
	errBadChecksum  = errors.New("record checksum mismatch")
)

// appendRecord appends the framed record for payload to dst.
func appendRecord(dst, payload []byte) []byte {
	var h [recordHeaderSize]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(h[4:8], checksum(payload))
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// parseHeader returns the payload length and checksum from a record header.
func parseHeader(h []byte) (length int, sum uint32, err error) {
	if len(h) < recordHeaderSize {
		return 0, 0, errShortHeader
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n == 0 || n > MaxEntrySize {
		return 0, 0, fmt.Errorf("%w: %d bytes", errBadLength, n)
	}
	return int(n), binary.BigEndian.Uint32(h[4:8]), nil
}

// decodeRecord decodes the record at the start of buf. It returns the
// payload (aliasing buf) and the number of bytes the record occupies.
func decodeRecord(buf []byte) (payload []byte, n int, err error) {
	length, sum, err := parseHeader(buf)
	if err != nil {
		return nil, 0, err
	}
	if len(buf)-recordHeaderSize < length {
		return nil, 0, errShortPayload
	}
	payload = buf[recordHeaderSize : recordHeaderSize+length]
	if checksum(payload) != sum {
		return nil, 0, errBadChecksum
	}
	return payload, recordHeaderSize + length, nil
}

// seqPrefix is how every canonical entry starts; the sequence number follows.
const seqPrefix = `{"seq":`

// parseSeq reads the sequence number from the start of a canonical entry
// without decoding the whole JSON document.
func parseSeq(payload []byte) (uint64, bool) {
	if len(payload) < len(seqPrefix)+2 || string(payload[:len(seqPrefix)]) != seqPrefix {
		return 0, false
	}
	rest := payload[len(seqPrefix):]
	i := 0
	for i < len(rest) && i < 20 && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i >= len(rest) || (rest[i] != ',' && rest[i] != '}') || (i > 1 && rest[0] == '0') {
		return 0, false
	}
	v, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil {
		return 0, false
	}
	return v, true
}
