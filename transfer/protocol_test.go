package transfer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
)

var fileX = [32]byte{0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 0xbb}

// TestRequestBytes pins the documented byte layout of requests.
func TestRequestBytes(t *testing.T) {
	x := hex.EncodeToString(fileX[:])
	tests := []struct {
		name string
		req  request
		want string
	}{
		{"layer", request{Op: opLayer, File: fileX}, "0101" + x},
		{"range 3+2", request{Op: opRange, File: fileX, First: 3, Count: 2}, "0102" + x + "0302"},
		{"range 300+64", request{Op: opRange, File: fileX, First: 300, Count: 64}, "0102" + x + "ac0240"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendRequest(nil, tt.req)
			if got := hex.EncodeToString(b); got != tt.want {
				t.Fatalf("encoded %s, want %s", got, tt.want)
			}
			back, err := readRequest(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if back != tt.req {
				t.Fatalf("decoded %+v, want %+v", back, tt.req)
			}
		})
	}
}

func TestRequestRejects(t *testing.T) {
	x := hex.EncodeToString(fileX[:])
	tests := []struct {
		name string
		hex  string
	}{
		{"empty", ""},
		{"wrong version", "0201" + x},
		{"unknown op", "0109" + x},
		{"short hash", "0101" + x[:40]},
		{"range without count", "0102" + x + "03"},
		{"zero count", "0102" + x + "0300"},
		{"count over cap", "0102" + x + "0341"},
		{"overlong varint", "0102" + x + "ffffffffffffffffffff01" + "01"},
		{"varint over 64 bits", "0102" + x + "ffffffffffffffffff02" + "01"},
		{"non-minimal varint", "0102" + x + "8300" + "01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := readRequest(bytes.NewReader(b)); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

func TestReadUvarint(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 300, 1<<63 - 1, 1<<64 - 1} {
		b := binary.AppendUvarint(nil, v)
		got, err := readUvarint(bytes.NewReader(b))
		if err != nil || got != v {
			t.Errorf("readUvarint(%x) = %d, %v; want %d", b, got, err, v)
		}
	}
}

func TestResponseFrames(t *testing.T) {
	leaves := [][32]byte{fileX, {1}}
	b := appendLayer(nil, 300000, 262144, leaves)
	want := "00" + "e0a712" + "808010" + "02"
	if got := hex.EncodeToString(b[:len(b)-64]); got != want {
		t.Fatalf("layer header %s, want %s", got, want)
	}
	r := bytes.NewReader(b)
	if err := readStatus(r); err != nil {
		t.Fatal(err)
	}
	hdr, got, err := readLayer(r, 2)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Size != 300000 || hdr.PieceSize != 262144 || len(got) != 2 || got[0] != fileX || got[1] != leaves[1] {
		t.Fatalf("decoded %+v %x", hdr, got)
	}
	if _, _, err := readLayer(bytes.NewReader(b[1:]), 1); !errors.Is(err, ErrProtocol) {
		t.Fatalf("layer over the expected leaf count: %v, want ErrProtocol", err)
	}
	if _, _, err := readLayer(bytes.NewReader(b[1:len(b)-5]), 2); !errors.Is(err, ErrProtocol) {
		t.Fatalf("truncated layer: %v, want ErrProtocol", err)
	}

	e := appendError(nil, statusBusy, strings.Repeat("x", 1000))
	if len(e) != 1+2+MaxErrorMessage {
		t.Fatalf("error frame of %d bytes, message not capped", len(e))
	}
	err = readStatus(bytes.NewReader(e))
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != statusBusy || len(re.Message) != MaxErrorMessage || !errors.Is(err, ErrRemote) {
		t.Fatalf("got %v", err)
	}
	if err := readStatus(bytes.NewReader([]byte{statusBusy, 0xff, 0x10})); !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized error message: %v, want ErrProtocol", err)
	}
}

// TestWireErrClassifies: a truncated frame is a protocol violation, a
// broken connection is not.
func TestWireErrClassifies(t *testing.T) {
	broken := errors.New("connection reset")
	if err := readStatus(bufio.NewReader(io.MultiReader(&errReader{broken}))); errors.Is(err, ErrProtocol) || !errors.Is(err, broken) {
		t.Fatalf("connection error classified as %v", err)
	}
	reset := fmt.Errorf("stream reset: %w", &network.StreamError{TransportError: io.EOF})
	if err := readStatus(bufio.NewReader(&errReader{reset})); errors.Is(err, ErrProtocol) || !errors.Is(err, network.ErrReset) {
		t.Fatalf("reset over a closed connection classified as %v", err)
	}
	if err := readStatus(bytes.NewReader(nil)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("EOF classified as %v", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// FuzzReadRequest: decoding never panics, never reads past maxRequestLen,
// and what decodes re-encodes to the bytes consumed.
func FuzzReadRequest(f *testing.F) {
	f.Add(appendRequest(nil, request{Op: opLayer, File: fileX}))
	f.Add(appendRequest(nil, request{Op: opRange, File: fileX, First: 1 << 40, Count: 64}))
	f.Add([]byte{1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		req, err := readRequest(r)
		consumed := len(data) - r.Len()
		if consumed > maxRequestLen {
			t.Fatalf("consumed %d bytes, cap %d", consumed, maxRequestLen)
		}
		if err != nil {
			return
		}
		if got := appendRequest(nil, req); !bytes.Equal(got, data[:consumed]) {
			t.Fatalf("re-encoded %x, consumed %x", got, data[:consumed])
		}
	})
}

// FuzzReadResponse: response decoding never panics and never allocates
// more leaves than allowed.
func FuzzReadResponse(f *testing.F) {
	f.Add(appendLayer(nil, 300000, 262144, [][32]byte{fileX, {1}}))
	f.Add(appendError(nil, statusNotFound, "no"))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		if err := readStatus(r); err != nil {
			return
		}
		_, leaves, err := readLayer(r, 4)
		if err == nil && len(leaves) > 4 {
			t.Fatalf("%d leaves over the cap of 4", len(leaves))
		}
	})
}
