package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-varint"
)

func TestCatalogSync(t *testing.T) {
	type call struct {
		platform string
		since    int64
		after    string
	}
	calls := make(chan call, 4)
	entries := blobs("catalog-entry", 5)
	nodes := newNetwork(t, 2, func(i int) Handlers {
		if i != 0 {
			return Handlers{}
		}
		return Handlers{Catalog: func(ctx context.Context, platform string, cur CatalogCursor) ([][]byte, error) {
			since := cur.Since
			calls <- call{platform, since, string(cur.After)}
			switch platform {
			case "broken":
				return nil, errors.New("/var/lib/gentoo-p2pd/catalog.db: locked")
			case "huge":
				// One oversized entry is dropped, the rest sent.
				return [][]byte{make([]byte, MaxBlobSize+1), []byte("small")}, nil
			}
			return entries[since:], nil
		}}
	})
	server, client := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := client.SyncCatalog(ctx, server.ID(), "amd64/x", CatalogCursor{Since: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, entries[2:], bytes.Equal) {
		t.Fatalf("SyncCatalog = %q, want %q", got, entries[2:])
	}
	if c := <-calls; c != (call{"amd64/x", 2, ""}) {
		t.Fatalf("handler called with %+v", c)
	}
	after := bytes.Repeat([]byte{7}, 32)
	if _, err := client.SyncCatalog(ctx, server.ID(), "amd64/x", CatalogCursor{Since: 3, After: after}); err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c != (call{"amd64/x", 3, string(after)}) {
		t.Fatalf("handler called with %+v, want the cursor id", c)
	}
	if _, err := client.SyncCatalog(ctx, server.ID(), "amd64/x", CatalogCursor{After: []byte("short")}); err == nil {
		t.Fatal("a cursor id that is no record id was sent")
	}
	got, err = client.SyncCatalog(ctx, server.ID(), "huge", CatalogCursor{})
	if err != nil || len(got) != 1 || string(got[0]) != "small" {
		t.Fatalf("SyncCatalog(huge) = %q, %v; want only the small entry", got, err)
	}
	<-calls
	_, err = client.SyncCatalog(ctx, server.ID(), "broken", CatalogCursor{})
	if !errors.Is(err, ErrRefused) || strings.Contains(err.Error(), "/var/lib") {
		t.Fatalf("SyncCatalog(broken) err = %v; want ErrRefused without local detail", err)
	}
	<-calls
	// The client has no handler: refused, not hung.
	if _, err := server.SyncCatalog(ctx, client.ID(), "amd64/x", CatalogCursor{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("SyncCatalog from handler-less node: %v, want ErrRefused", err)
	}
	if _, err := client.SyncCatalog(ctx, server.ID(), "", CatalogCursor{}); !errors.Is(err, ErrBadPlatform) {
		t.Fatalf("empty platform: %v", err)
	}
	if _, err := client.SyncCatalog(ctx, server.ID(), "p", CatalogCursor{Since: -1}); err == nil {
		t.Fatal("negative since accepted")
	}
	if _, err := client.FetchAttestations(ctx, server.ID(), cid.Undef); !errors.Is(err, ErrBadKey) {
		t.Fatalf("undefined key: %v", err)
	}
}

// TestMalformedRequests sends raw bytes on the stream protocols: the server
// refuses, and a handler is never reached with garbage.
func TestMalformedRequests(t *testing.T) {
	var called atomic.Bool
	nodes := newNetwork(t, 2, func(i int) Handlers {
		return Handlers{
			Attestations: func(context.Context, cid.Cid) ([][]byte, error) { called.Store(true); return nil, nil },
			Catalog:      func(context.Context, string, CatalogCursor) ([][]byte, error) { called.Store(true); return nil, nil },
		}
	})
	key := testKey(t, "k")
	tests := []struct {
		name  string
		proto string
		req   []byte
	}{
		{"attest empty", string(AttestProtocol), nil},
		{"attest not a cid", string(AttestProtocol), append(varint.ToUvarint(3), "abc"...)},
		{"attest trailing bytes in cid", string(AttestProtocol), append(varint.ToUvarint(uint64(key.ByteLen()+1)), append(key.Bytes(), 0)...)},
		{"attest oversized frame", string(AttestProtocol), varint.ToUvarint(1 << 30)},
		{"attest truncated", string(AttestProtocol), append(varint.ToUvarint(36), key.Bytes()[:10]...)},
		{"catalog no since", string(CatalogProtocol), append(varint.ToUvarint(3), "x86"...)},
		{"catalog control char", string(CatalogProtocol), append(append(varint.ToUvarint(3), "a\x00b"...), 0)},
		{"catalog cursor id of 3 bytes", string(CatalogProtocol), append(append(append(varint.ToUvarint(3), "x86"...), 0), append(varint.ToUvarint(3), "abc"...)...)},
		{"catalog platform too long", string(CatalogProtocol), append(varint.ToUvarint(MaxPlatformLen+1), bytes.Repeat([]byte("p"), MaxPlatformLen+1)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := nodes[1].Host().NewStream(ctx, nodes[0].ID(), protocol.ID(tt.proto))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Write(tt.req); err != nil {
				t.Fatal(err)
			}
			_ = s.CloseWrite()
			_, err = readBlobs(bufio.NewReader(s))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("response error = %v, want ErrRefused", err)
			}
		})
	}
	if called.Load() {
		t.Fatal("a handler was called for a malformed request")
	}
}

// encodeResponse builds a success response the way a server would.
func encodeResponse(t testing.TB, blobs [][]byte) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if _, err := writeBlobs(w, blobs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadBlobs(t *testing.T) {
	frame := func(b []byte) []byte { return append(varint.ToUvarint(uint64(len(b))), b...) }
	ok := func(count uint64, frames ...[]byte) []byte {
		out := append([]byte{statusOK}, varint.ToUvarint(count)...)
		for _, f := range frames {
			out = append(out, f...)
		}
		return out
	}
	tests := []struct {
		name    string
		wire    []byte
		want    [][]byte
		wantErr error
	}{
		{"empty list", ok(0), [][]byte{}, nil},
		{"two blobs", ok(2, frame([]byte("a")), frame([]byte("bc"))), [][]byte{[]byte("a"), []byte("bc")}, nil},
		{"max size blob", ok(1, frame(make([]byte, MaxBlobSize))), [][]byte{make([]byte, MaxBlobSize)}, nil},
		{"refusal", append([]byte{statusRefused}, frame([]byte("not served"))...), nil, ErrRefused},
		{"no status", nil, nil, ErrProtocol},
		{"unknown status", []byte{7}, nil, ErrProtocol},
		{"count over cap", ok(MaxBlobs + 1), nil, ErrProtocol},
		{"blob over cap", ok(1, frame(make([]byte, MaxBlobSize+1))), nil, ErrProtocol},
		{"empty blob", ok(1, frame(nil)), nil, ErrProtocol},
		{"fewer blobs than count", ok(2, frame([]byte("a"))), nil, ErrProtocol},
		{"trailing data", append(ok(1, frame([]byte("a"))), 0), nil, ErrProtocol},
		{"truncated blob", ok(1, []byte{5, 'a'}), nil, ErrProtocol},
		{"non-minimal varint", append([]byte{statusOK}, 0x80, 0x00), nil, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBlobs(bufio.NewReader(bytes.NewReader(tt.wire)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.EqualFunc(got, tt.want, bytes.Equal) {
				t.Fatalf("readBlobs = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestWriteBlobsCaps(t *testing.T) {
	many := blobs("b", MaxBlobs+10)
	got, err := readBlobs(bufio.NewReader(bytes.NewReader(encodeResponse(t, many))))
	if err != nil || len(got) != MaxBlobs {
		t.Fatalf("count cap: got %d blobs, %v; want %d", len(got), err, MaxBlobs)
	}
	big := make([][]byte, 0, 600)
	for range 600 {
		big = append(big, make([]byte, MaxBlobSize))
	}
	got, err = readBlobs(bufio.NewReader(bytes.NewReader(encodeResponse(t, big))))
	if err != nil || len(got) != MaxResponseBytes/MaxBlobSize {
		t.Fatalf("byte cap: got %d blobs, %v; want %d", len(got), err, MaxResponseBytes/MaxBlobSize)
	}
}

// FuzzReadBlobs feeds arbitrary responses to the client decoder; whatever
// it accepts must re-encode to the same bytes.
func FuzzReadBlobs(f *testing.F) {
	f.Add(encodeResponse(f, nil))
	f.Add(encodeResponse(f, blobs("attestation", 3)))
	f.Add(encodeResponse(f, [][]byte{make([]byte, 300)}))
	f.Add([]byte{statusRefused, 3, 'b', 'a', 'd'})
	f.Add([]byte{statusOK, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, wire []byte) {
		got, err := readBlobs(bufio.NewReader(bytes.NewReader(wire)))
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrRefused) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if re := encodeResponse(t, got); !bytes.Equal(re, wire) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, wire)
		}
	})
}

// A node started without handlers refuses the stream protocols until Serve
// gives it some, and then answers with them.
func TestServeSetsHandlersLate(t *testing.T) {
	nodes := newNetwork(t, 2, func(int) Handlers { return Handlers{} })
	server, client := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.SyncCatalog(ctx, server.ID(), "amd64", CatalogCursor{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("catalog before Serve: %v, want a refusal", err)
	}
	server.Serve(Handlers{Catalog: func(context.Context, string, CatalogCursor) ([][]byte, error) {
		return [][]byte{[]byte("entry")}, nil
	}})
	got, err := client.SyncCatalog(ctx, server.ID(), "amd64", CatalogCursor{})
	if err != nil || len(got) != 1 || string(got[0]) != "entry" {
		t.Fatalf("catalog after Serve: %q, %v", got, err)
	}
}

// TestAbout: /gentoo-p2p/about/1 carries the query to the peer's handler
// and its one answer back; a peer without the handler refuses, and a
// query over the limit is refused before anything is sent.
func TestAbout(t *testing.T) {
	var got string
	server := newTestNode(t, testConfig(t), Handlers{About: func(_ context.Context, q string) ([]byte, error) {
		got = q
		return []byte(`{"platform":"p"}`), nil
	}})
	bare := newTestNode(t, testConfig(t), Handlers{})
	client := newTestNode(t, testConfig(t, server.AddrInfo(), bare.AddrInfo()), Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answer, err := client.About(ctx, server.ID(), "app-misc/hello-1.0")
	if err != nil || string(answer) != `{"platform":"p"}` || got != "app-misc/hello-1.0" {
		t.Fatalf("About = %q, %v (handler saw %q)", answer, err, got)
	}
	if _, err := client.About(ctx, bare.ID(), "x"); !errors.Is(err, ErrRefused) {
		t.Errorf("About of a peer without the handler: %v, want refused", err)
	}
	if _, err := client.About(ctx, server.ID(), strings.Repeat("a", wire.MaxAboutQuery+1)); err == nil {
		t.Error("About with an over-long query succeeded")
	}
}

// endlessBlobs is an answer of count blobs of size bytes each, made as it
// is read, counting what the reader took.
type endlessBlobs struct {
	head     []byte
	size     int
	left     uint64
	consumed int
	pending  []byte
}

func newEndlessBlobs(count uint64, size int) *endlessBlobs {
	return &endlessBlobs{head: append([]byte{statusOK}, varint.ToUvarint(count)...), size: size, left: count}
}

func (e *endlessBlobs) Read(p []byte) (int, error) {
	if len(e.head) > 0 {
		n := copy(p, e.head)
		e.head = e.head[n:]
		e.consumed += n
		return n, nil
	}
	if len(e.pending) == 0 {
		if e.left == 0 {
			return 0, io.EOF
		}
		e.left--
		e.pending = append(varint.ToUvarint(uint64(e.size)), bytes.Repeat([]byte{'x'}, e.size)...)
	}
	n := copy(p, e.pending)
	e.pending = e.pending[n:]
	e.consumed += n
	return n, nil
}

// TestAboutAnswerBounded: an about answer is one blob of at most
// wire.MaxAboutAnswer bytes; an answer announcing more blobs is refused
// on its count, before a blob is read, and an oversized blob on its
// length, so a hostile peer makes the asker hold one small answer at
// most (not the 32 MiB an attest answer may carry).
func TestAboutAnswerBounded(t *testing.T) {
	tests := []struct {
		name  string
		count uint64
		size  int
	}{
		{"the attest maximum", MaxBlobs, MaxBlobSize},
		{"two blobs", 2, 16},
		{"no blob", 0, 0},
		{"one blob over the cap", 1, wire.MaxAboutAnswer + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newEndlessBlobs(tt.count, tt.size)
			_, err := readBlobsWithin(bufio.NewReaderSize(r, 16), aboutLimits)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
			if r.consumed > 32 {
				t.Errorf("read %d bytes of a refused answer, want the header only", r.consumed)
			}
		})
	}
	r := newEndlessBlobs(1, wire.MaxAboutAnswer)
	got, err := readBlobsWithin(bufio.NewReader(r), aboutLimits)
	if err != nil || len(got) != 1 || len(got[0]) != wire.MaxAboutAnswer {
		t.Fatalf("one blob at the cap: %d blobs, %v", len(got), err)
	}

	// Over a real stream: a peer answering with many blobs is refused.
	hostile := newTestNode(t, testConfig(t), Handlers{})
	hostile.Host().SetStreamHandler(AboutProtocol, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, newEndlessBlobs(MaxBlobs, MaxBlobSize))
	})
	client := newTestNode(t, testConfig(t, hostile.AddrInfo()), Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.About(ctx, hostile.ID(), "x"); !errors.Is(err, ErrProtocol) {
		t.Fatalf("About of a peer sending %d blobs: %v, want ErrProtocol", MaxBlobs, err)
	}
}

// TestAboutRateLimited: each peer may make AboutBurst about requests,
// then one per AboutInterval; more are refused as busy before the
// handler (which walks the store) runs, and other peers are not affected.
func TestAboutRateLimited(t *testing.T) {
	var calls atomic.Int32
	cfg := testConfig(t)
	cfg.AboutInterval, cfg.AboutBurst = time.Hour, 3
	server := newTestNode(t, cfg, Handlers{About: func(context.Context, string) ([]byte, error) {
		calls.Add(1)
		return []byte(`{}`), nil
	}})
	greedy := newTestNode(t, testConfig(t, server.AddrInfo()), Handlers{})
	other := newTestNode(t, testConfig(t, server.AddrInfo()), Handlers{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		if _, err := greedy.About(ctx, server.ID(), "x"); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	if _, err := greedy.About(ctx, server.ID(), "x"); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), ReasonBusy) {
		t.Fatalf("request over the burst: %v, want refused as busy", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
	if _, err := other.About(ctx, server.ID(), "x"); err != nil {
		t.Errorf("another peer's request: %v", err)
	}
}
