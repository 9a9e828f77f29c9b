package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// ProtocolID is the libp2p protocol of the fetch stream.
//
// Wire format (all integers are unsigned LEB128 varints, "uvarint", as
// encoding/binary writes them; one request and one response per stream):
//
// Request, fetcher → provider, then the fetcher closes its write side:
//
//	byte     version        = 0x01
//	byte     op             = 0x01 (layer) | 0x02 (range)
//	[32]byte file           SHA-256 of the whole container file
//	op range only:
//	uvarint  first          index of the first piece wanted
//	uvarint  count          number of consecutive pieces, 1..MaxPiecesPerRequest
//
// Response, provider → fetcher:
//
//	byte     status         0x00 ok; otherwise an error code (see below)
//	status != ok:
//	uvarint  n              0..MaxErrorMessage
//	n bytes  message        UTF-8, for logs only
//	then the provider closes the stream.
//	status == ok, op layer:
//	uvarint  size           file size in bytes
//	uvarint  pieceSize      pieces.Size (262144); a fetcher rejects others
//	uvarint  n              number of leaves = pieces.Count(size)
//	n×32 bytes              the leaf hashes, in piece order
//	status == ok, op range:
//	the raw bytes of pieces first..first+count-1 concatenated; every piece
//	is pieces.Size bytes except the file's last piece (pieces.PieceLen).
//	A provider that fails mid-range resets the stream.
//
// Error codes: 0x01 not found (the provider does not hold the file), 0x02
// disabled (consume mode: the provider serves nothing), 0x03 busy (no
// upload slot came free while the request waited, by default up to 10 s,
// or too many requests from this peer; retry later), 0x04 bad
// request (malformed or out of range), 0x05 internal (the provider failed
// on a file it holds). A fetcher treats "not found" as "this provider does
// not have it" (Result.NotHeld), not as a fault.
//
// Example: the range request for pieces 3..4 of file X is the 38 bytes
// 01 02 X[0..31] 03 02; an ok response is 00 followed by 524288 bytes
// (or fewer if piece 4 is the last, short piece).
const ProtocolID protocol.ID = "/gentoo-p2p/fetch/1"

// Wire constants; see ProtocolID.
const (
	wireVersion = 0x01

	opLayer = 0x01
	opRange = 0x02

	statusOK         = 0x00
	statusNotFound   = 0x01
	statusDisabled   = 0x02
	statusBusy       = 0x03
	statusBadRequest = 0x04
	statusInternal   = 0x05
)

// MaxPiecesPerRequest caps one range request (16 MiB with 256 KiB pieces),
// so one request cannot pin a provider's upload slot for long and a
// dropped peer wastes at most this much.
const MaxPiecesPerRequest = 64

// MaxErrorMessage caps the message of an error frame.
const MaxErrorMessage = 256

// maxRequestLen is the longest valid request: 2 bytes, 32 bytes of hash, two
// uvarints of at most 10 bytes.
const maxRequestLen = 2 + 32 + 2*binary.MaxVarintLen64

var (
	// ErrProtocol reports a malformed frame from the other side.
	ErrProtocol = errors.New("transfer: protocol violation")
	// ErrRemote reports an error frame sent by a provider; the wrapped
	// *RemoteError carries the code.
	ErrRemote = errors.New("transfer: provider refused")
)

// RemoteError is a provider's error frame, kept so the fetcher can tell a
// busy provider (retry later) from one that does not hold the file.
type RemoteError struct {
	Code    byte
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("transfer: provider refused: %s: %q", statusName(e.Code), e.Message)
}

// Unwrap lets errors.Is(err, ErrRemote) match.
func (e *RemoteError) Unwrap() error { return ErrRemote }

func statusName(code byte) string {
	switch code {
	case statusNotFound:
		return "not found"
	case statusDisabled:
		return "disabled"
	case statusBusy:
		return "busy"
	case statusBadRequest:
		return "bad request"
	case statusInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", code)
}

// wireErr wraps a read error while decoding a frame: a frame cut short
// (EOF) is a protocol violation; anything else (reset, timeout) is passed
// on as it is, so callers can tell a broken connection from a liar.
func wireErr(what string, err error) error {
	if errors.Is(err, network.ErrReset) {
		// A reset stream (also what a closing connection does to its
		// streams, even when the transport error underneath is an EOF).
		return fmt.Errorf("transfer: %s: %w", what, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: frame cut short: %w", ErrProtocol, what, err)
	}
	if errors.Is(err, errVarint) {
		return fmt.Errorf("%w: %s: %w", ErrProtocol, what, err)
	}
	return fmt.Errorf("transfer: %s: %w", what, err)
}

// errVarint reports an over-long or non-minimal uvarint.
var errVarint = errors.New("uvarint overflows 64 bits or is not minimally encoded")

// readUvarint decodes a uvarint and, unlike binary.ReadUvarint, rejects
// non-minimal encodings (a trailing 0x00 group), so every value has one
// encoding on the wire.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if b < 0x80 {
			if (i == binary.MaxVarintLen64-1 && b > 1) || (i > 0 && b == 0) {
				return 0, errVarint
			}
			return x | uint64(b)<<(7*i), nil
		}
		x |= uint64(b&0x7f) << (7 * i)
	}
	return 0, errVarint
}

// request is a decoded request frame.
type request struct {
	Op    byte
	File  [32]byte
	First uint64
	Count uint64
}

// appendRequest encodes r.
func appendRequest(b []byte, r request) []byte {
	b = append(b, wireVersion, r.Op)
	b = append(b, r.File[:]...)
	if r.Op == opRange {
		b = binary.AppendUvarint(b, r.First)
		b = binary.AppendUvarint(b, r.Count)
	}
	return b
}

// readRequest decodes one request; it reads at most maxRequestLen bytes.
func readRequest(r io.ByteReader) (request, error) {
	var req request
	v, err := r.ReadByte()
	if err != nil {
		return req, wireErr("reading version", err)
	}
	if v != wireVersion {
		return req, fmt.Errorf("%w: version %d, want %d", ErrProtocol, v, wireVersion)
	}
	if req.Op, err = r.ReadByte(); err != nil {
		return req, wireErr("reading op", err)
	}
	for i := range req.File {
		if req.File[i], err = r.ReadByte(); err != nil {
			return req, wireErr("reading file hash", err)
		}
	}
	switch req.Op {
	case opLayer:
	case opRange:
		if req.First, err = readUvarint(r); err != nil {
			return req, wireErr("reading first piece", err)
		}
		if req.Count, err = readUvarint(r); err != nil {
			return req, wireErr("reading piece count", err)
		}
		if req.Count == 0 || req.Count > MaxPiecesPerRequest {
			return req, fmt.Errorf("%w: piece count %d outside 1..%d", ErrProtocol, req.Count, MaxPiecesPerRequest)
		}
	default:
		return req, fmt.Errorf("%w: unknown op %d", ErrProtocol, req.Op)
	}
	return req, nil
}

// appendError encodes an error frame; long messages are truncated.
func appendError(b []byte, code byte, msg string) []byte {
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
	}
	b = append(b, code)
	b = binary.AppendUvarint(b, uint64(len(msg)))
	return append(b, msg...)
}

// readStatus reads the status byte and, for an error, the message, and
// returns a *RemoteError for a refusal.
func readStatus(r io.ByteReader) error {
	code, err := r.ReadByte()
	if err != nil {
		return wireErr("reading status", err)
	}
	if code == statusOK {
		return nil
	}
	n, err := readUvarint(r)
	if err != nil {
		return wireErr("reading error length", err)
	}
	if n > MaxErrorMessage {
		return fmt.Errorf("%w: error message of %d bytes, cap %d", ErrProtocol, n, MaxErrorMessage)
	}
	msg := make([]byte, n)
	for i := range msg {
		if msg[i], err = r.ReadByte(); err != nil {
			return wireErr("reading error message", err)
		}
	}
	return &RemoteError{Code: code, Message: string(msg)}
}

// layerHeader is the fixed part of an ok layer response.
type layerHeader struct {
	Size      uint64
	PieceSize uint64
	Leaves    uint64
}

func appendLayer(b []byte, size int64, pieceSize int, leaves [][32]byte) []byte {
	b = append(b, statusOK)
	b = binary.AppendUvarint(b, uint64(size))
	b = binary.AppendUvarint(b, uint64(pieceSize))
	b = binary.AppendUvarint(b, uint64(len(leaves)))
	for i := range leaves {
		b = append(b, leaves[i][:]...)
	}
	return b
}

// readLayer reads an ok layer response after its status byte. maxLeaves
// bounds the allocation: the fetcher knows how many leaves it expects.
func readLayer(r io.ByteReader, maxLeaves int) (layerHeader, [][32]byte, error) {
	var h layerHeader
	var err error
	if h.Size, err = readUvarint(r); err != nil {
		return h, nil, wireErr("reading layer size", err)
	}
	if h.PieceSize, err = readUvarint(r); err != nil {
		return h, nil, wireErr("reading layer piece size", err)
	}
	if h.Leaves, err = readUvarint(r); err != nil {
		return h, nil, wireErr("reading layer leaf count", err)
	}
	if h.Leaves > uint64(maxLeaves) {
		return h, nil, fmt.Errorf("%w: layer of %d leaves, expected at most %d", ErrProtocol, h.Leaves, maxLeaves)
	}
	leaves := make([][32]byte, h.Leaves)
	for i := range leaves {
		for j := range leaves[i] {
			if leaves[i][j], err = r.ReadByte(); err != nil {
				return h, nil, wireErr(fmt.Sprintf("reading leaf %d", i), err)
			}
		}
	}
	return h, leaves, nil
}
