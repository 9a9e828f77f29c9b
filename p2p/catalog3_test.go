package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-varint"
)

func idOf(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// catalog/3 between two real hosts: the ids page carries the cursor and
// the ids back, the records request the kinds and ids asked for, and the
// server never sends more records than were asked for.
func TestCatalogIDsAndRecords(t *testing.T) {
	type call struct {
		platform string
		cur      CatalogCursor
	}
	calls := make(chan call, 4)
	asked := make(chan []CatalogID, 4)
	page := []CatalogID{
		{Kind: wire.RecordEndorsement, ID: idOf("e")},
		{Kind: wire.RecordAttestation, Time: 1, ID: idOf("a1")},
		{Kind: wire.RecordAttestation, Time: 1 << 40, ID: idOf("a2")},
	}
	nodes := newNetwork(t, 2, func(i int) Handlers {
		if i != 0 {
			return Handlers{}
		}
		return Handlers{
			CatalogIDs: func(_ context.Context, platform string, cur CatalogCursor) ([]CatalogID, error) {
				calls <- call{platform, cur}
				if platform == "broken" {
					return nil, errors.New("/var/lib/gentoo-p2pd/state.db: locked")
				}
				return page, nil
			},
			CatalogRecords: func(_ context.Context, want []CatalogID) ([][]byte, error) {
				asked <- want
				return [][]byte{[]byte("r1"), []byte("r2"), []byte("r3")}, nil
			},
		}
	})
	server, client := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	after := bytes.Repeat([]byte{7}, 32)
	got, err := client.CatalogIDs(ctx, server.ID(), "demand/amd64", CatalogCursor{Since: 5, After: after})
	if err != nil || !slices.Equal(got, page) {
		t.Fatalf("CatalogIDs = %+v, %v; want %+v", got, err, page)
	}
	if c := <-calls; c.platform != "demand/amd64" || c.cur.Since != 5 || !bytes.Equal(c.cur.After, after) {
		t.Fatalf("ids handler called with %+v", c)
	}
	if _, err := client.CatalogIDs(ctx, server.ID(), "amd64", CatalogCursor{}); err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c.cur.Since != 0 || c.cur.After != nil {
		t.Fatalf("a cursor with no id arrived as %+v", c.cur)
	}
	_, err = client.CatalogIDs(ctx, server.ID(), "broken", CatalogCursor{})
	if !errors.Is(err, ErrRefused) || strings.Contains(err.Error(), "/var/lib") {
		t.Fatalf("CatalogIDs(broken) = %v; want ErrRefused without local detail", err)
	}
	<-calls

	want := page[:2]
	recs, err := client.CatalogRecords(ctx, server.ID(), want)
	if err != nil || len(recs) != 2 || string(recs[0]) != "r1" {
		t.Fatalf("CatalogRecords = %q, %v; want the first two of the handler's three", recs, err)
	}
	if a := <-asked; len(a) != 2 || a[0].Kind != wire.RecordEndorsement || a[0].ID != idOf("e") || a[1].ID != idOf("a1") || a[1].Time != 0 {
		t.Fatalf("records handler asked for %+v", a)
	}

	// Refused before anything is sent.
	if _, err := client.CatalogRecords(ctx, server.ID(), nil); err == nil {
		t.Fatal("an empty records request was sent")
	}
	if _, err := client.CatalogRecords(ctx, server.ID(), make([]CatalogID, wire.MaxRecordsAsked+1)); err == nil {
		t.Fatal("a records request over the limit was sent")
	}
	if _, err := client.CatalogRecords(ctx, server.ID(), []CatalogID{{Kind: 'x'}}); err == nil {
		t.Fatal("a record of unknown kind was asked for")
	}
	if _, err := client.CatalogIDs(ctx, server.ID(), "amd64", CatalogCursor{After: []byte("short")}); err == nil {
		t.Fatal("a cursor id that is no record id was sent")
	}
	// The client serves nothing: refused, not hung.
	if _, err := server.CatalogIDs(ctx, client.ID(), "amd64", CatalogCursor{}); !errors.Is(err, ErrRefused) || !errors.Is(err, wire.ErrNotSupported) {
		t.Fatalf("CatalogIDs from a handler-less node: %v, want ErrRefused and wire.ErrNotSupported", err)
	}
}

// A peer that predates catalog/3 (no stream handler for it) fails with
// wire.ErrNotSupported, so a client knows to fall back to catalog/2.
func TestCatalogIDsNotSupported(t *testing.T) {
	nodes := newNetwork(t, 2, func(int) Handlers {
		return Handlers{Catalog: func(context.Context, string, CatalogCursor) ([][]byte, error) { return nil, nil }}
	})
	nodes[0].Host().RemoveStreamHandler(CatalogIDsProtocol)
	// An older daemon never listed catalog/3 in identify; this one says so
	// by an identify push.
	waitFor(t, 10*time.Second, "identify push without catalog/3", func() bool {
		ok, err := nodes[1].Host().Peerstore().SupportsProtocols(nodes[0].ID(), CatalogIDsProtocol)
		return err == nil && len(ok) == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[1].CatalogIDs(ctx, nodes[0].ID(), "amd64", CatalogCursor{}); !errors.Is(err, wire.ErrNotSupported) {
		t.Fatalf("CatalogIDs to an older daemon: %v, want wire.ErrNotSupported", err)
	}
	if _, err := nodes[1].SyncCatalog(ctx, nodes[0].ID(), "amd64", CatalogCursor{}); err != nil {
		t.Fatalf("catalog/2 to the same daemon: %v", err)
	}
}

// catalog/3 requests count against the same per-peer limit as every other
// request: with limits.peer_requests open, the next is refused as busy.
func TestCatalogIDsCountAgainstRequestLimits(t *testing.T) {
	entered := make(chan struct{}, DefaultMaxPeerRequests)
	release := make(chan struct{})
	nodes := newNetwork(t, 2, func(i int) Handlers {
		return Handlers{CatalogIDs: func(ctx context.Context, _ string, _ CatalogCursor) ([]CatalogID, error) {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		}}
	})
	server, client := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, DefaultMaxPeerRequests)
	for range DefaultMaxPeerRequests {
		go func() {
			_, err := client.CatalogIDs(ctx, server.ID(), "amd64", CatalogCursor{})
			errs <- err
		}()
	}
	for range DefaultMaxPeerRequests {
		<-entered
	}
	_, err := client.CatalogIDs(ctx, server.ID(), "amd64", CatalogCursor{})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), ReasonBusy) {
		t.Fatalf("request past limits.peer_requests: %v, want refused as busy", err)
	}
	close(release)
	for range DefaultMaxPeerRequests {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Malformed catalog/3 requests are refused and reach no handler.
func TestMalformedCatalogIDsRequests(t *testing.T) {
	var called atomic.Bool
	nodes := newNetwork(t, 2, func(int) Handlers {
		return Handlers{
			CatalogIDs: func(context.Context, string, CatalogCursor) ([]CatalogID, error) {
				called.Store(true)
				return nil, nil
			},
			CatalogRecords: func(context.Context, []CatalogID) ([][]byte, error) { called.Store(true); return nil, nil },
			CatalogIDsUntil: func(context.Context, string, CatalogCursor, int64) ([]CatalogID, error) {
				called.Store(true)
				return nil, nil
			},
			CatalogFingerprints: func(context.Context, string, int64, int64, int) ([]wire.CatalogSlice, error) {
				called.Store(true)
				return nil, nil
			},
		}
	})
	id := make([]byte, 32)
	plat := append(varint.ToUvarint(3), "x86"...)
	fp := func(v ...uint64) []byte {
		out := append([]byte{opCatalogFingerprints}, plat...)
		for _, x := range v {
			out = append(out, varint.ToUvarint(x)...)
		}
		return out
	}
	until := func(since, until uint64, after ...byte) []byte {
		out := append(append([]byte{opCatalogIDsUntil}, plat...), varint.ToUvarint(since)...)
		out = append(append(out, byte(len(after))), after...)
		return append(out, varint.ToUvarint(until)...)
	}
	tests := []struct {
		name string
		req  []byte
	}{
		{"empty", nil},
		{"unknown operation", []byte{0x07}},
		{"ids without since", append([]byte{opCatalogIDs}, append(varint.ToUvarint(3), "x86"...)...)},
		{"ids since over 2^62", append(append([]byte{opCatalogIDs}, append(varint.ToUvarint(3), "x86"...)...), varint.ToUvarint(1<<62+1)...)},
		{"ids cursor id of 3 bytes", append(append([]byte{opCatalogIDs}, append(varint.ToUvarint(3), "x86"...)...), 0, 3, 'a', 'b', 'c')},
		{"records count 0", []byte{opCatalogRecords, 0}},
		{"records count over limit", append([]byte{opCatalogRecords}, varint.ToUvarint(wire.MaxRecordsAsked+1)...)},
		{"records unknown kind", append([]byte{opCatalogRecords, 1, 'x'}, id...)},
		{"records truncated id", append([]byte{opCatalogRecords, 1, 'a'}, id[:5]...)},
		{"fingerprints of one slice", fp(0, 100, 1)},
		{"fingerprints of 17 slices", fp(0, 100, 17)},
		{"fingerprints of an empty range", fp(100, 100, 2)},
		{"fingerprints beyond 2^62", fp(0, 1<<62+1, 2)},
		{"fingerprints of slices shorter than a second", fp(10, 13, 4)},
		{"fingerprints without slices", fp(0, 100)},
		{"bounded ids ending before they start", until(10, 10)},
		{"bounded ids beyond 2^62", until(10, 1<<62+1)},
		{"bounded ids without after", append(append([]byte{opCatalogIDsUntil}, plat...), 10)},
		{"bounded ids cursor id of 3 bytes", until(10, 20, 'a', 'b', 'c')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := nodes[1].Host().NewStream(ctx, nodes[0].ID(), protocol.ID(CatalogIDsProtocol))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Write(tt.req); err != nil {
				t.Fatal(err)
			}
			_ = s.CloseWrite()
			if _, err := readCatalogIDs(bufio.NewReader(s)); !errors.Is(err, ErrRefused) {
				t.Fatalf("response error = %v, want ErrRefused", err)
			}
		})
	}
	if called.Load() {
		t.Fatal("a handler was called for a malformed request")
	}
}

func encodeIDs(t testing.TB, ids []CatalogID) []byte {
	var buf bytes.Buffer
	if _, err := writeCatalogIDs(bufio.NewWriter(&buf), ids); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadCatalogIDs(t *testing.T) {
	id := idOf("x")
	entry := func(kind byte, time uint64) []byte {
		return append(append([]byte{kind}, varint.ToUvarint(time)...), id[:]...)
	}
	ok := func(count uint64, entries ...[]byte) []byte {
		out := append([]byte{statusOK}, varint.ToUvarint(count)...)
		for _, e := range entries {
			out = append(out, e...)
		}
		return out
	}
	tests := []struct {
		name    string
		wire    []byte
		want    []CatalogID
		wantErr error
	}{
		{"empty page", ok(0), []CatalogID{}, nil},
		{"two ids", ok(2, entry('e', 0), entry('a', 1<<62)), []CatalogID{{Kind: 'e', ID: id}, {Kind: 'a', Time: 1 << 62, ID: id}}, nil},
		{"refusal", append([]byte{statusRefused}, append(varint.ToUvarint(4), "busy"...)...), nil, ErrRefused},
		{"too many ids", ok(wire.MaxCatalogIDs + 1), nil, ErrProtocol},
		{"unknown kind", ok(1, entry('x', 1)), nil, ErrProtocol},
		{"time over 2^62", ok(1, entry('a', 1<<62+1)), nil, ErrProtocol},
		{"fewer ids than count", ok(2, entry('a', 1)), nil, ErrProtocol},
		{"truncated id", ok(1, entry('a', 1)[:10]), nil, ErrProtocol},
		{"trailing data", append(ok(1, entry('d', 1)), 0), nil, ErrProtocol},
		{"unknown status", []byte{9}, nil, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCatalogIDs(bufio.NewReader(bytes.NewReader(tt.wire)))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("readCatalogIDs = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
	// The writer keeps within the limits the reader enforces.
	many := make([]CatalogID, wire.MaxCatalogIDs+5)
	for i := range many {
		many[i] = CatalogID{Kind: wire.RecordAttestation, Time: int64(i)}
	}
	many[0].Kind, many[1].Time = 'x', -1
	got, err := readCatalogIDs(bufio.NewReader(bytes.NewReader(encodeIDs(t, many))))
	if err != nil || len(got) != wire.MaxCatalogIDs || got[0].Time != 2 {
		t.Fatalf("writer over the limits: %d ids from %d, %v; want %d, the bad two dropped", len(got), 2, err, wire.MaxCatalogIDs)
	}
}

// FuzzReadCatalogIDs feeds arbitrary ids answers to the client decoder;
// whatever it accepts must re-encode to the same bytes.
func FuzzReadCatalogIDs(f *testing.F) {
	f.Add(encodeIDs(f, nil))
	f.Add(encodeIDs(f, []CatalogID{{Kind: 'e', ID: idOf("e")}, {Kind: 'a', Time: 1_700_000_000, ID: idOf("a")}}))
	f.Add([]byte{statusRefused, 4, 'b', 'u', 's', 'y'})
	f.Add([]byte{statusOK, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := readCatalogIDs(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrRefused) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if re := encodeIDs(t, got); !bytes.Equal(re, raw) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, raw)
		}
	})
}

func encodeCatalogRequest(t testing.TB, req catalogRequest) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeCatalogRequest(w, req); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReadCatalogRequest feeds arbitrary catalog/3 requests to the server
// decoder: what it accepts is within the limits, and decodes the same
// once encoded again.
func FuzzReadCatalogRequest(f *testing.F) {
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogIDs, platform: "x86_64-pc-linux-gnu-0123", cur: CatalogCursor{Since: 42}}))
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogIDs, platform: "demand/p", cur: CatalogCursor{Since: 1, After: bytes.Repeat([]byte{1}, 32)}}))
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogRecords, want: []CatalogID{{Kind: 'a', ID: idOf("a")}, {Kind: 'd', ID: idOf("d")}}}))
	f.Add([]byte{opCatalogRecords, 0xff, 0x01})
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogFingerprints, platform: "p", from: 1, until: 1_800_000_000, slices: 16}))
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogIDsUntil, platform: "demand/p", cur: CatalogCursor{Since: 1}, until: 1_800_000_000}))
	f.Add(encodeCatalogRequest(f, catalogRequest{op: opCatalogIDsUntil, platform: "p", cur: CatalogCursor{Since: 1, After: bytes.Repeat([]byte{2}, 32)}, until: 2}))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := readCatalogRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrBadPlatform) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if len(req.want) > wire.MaxRecordsAsked || len(req.platform) > MaxPlatformLen || req.cur.Since < 0 || req.cur.Since > maxSince {
			t.Fatalf("request over the limits accepted: %+v", req)
		}
		again, err := readCatalogRequest(bufio.NewReader(bytes.NewReader(encodeCatalogRequest(t, req))))
		if err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		if req.op == opCatalogFingerprints && checkFingerprintRange(req.from, req.until, req.slices) != nil ||
			req.op == opCatalogIDsUntil && (req.until <= req.cur.Since || req.until > maxSince) {
			t.Fatalf("range over the limits accepted: %+v", req)
		}
		if again.op != req.op || again.platform != req.platform || again.cur.Since != req.cur.Since ||
			!bytes.Equal(again.cur.After, req.cur.After) || !slices.Equal(again.want, req.want) ||
			again.from != req.from || again.until != req.until || again.slices != req.slices {
			t.Fatalf("round trip differs: %+v, then %+v", req, again)
		}
	})
}

// Fingerprints and bounded ids pages between two real hosts: the request
// carries the range and slices, the answer the slices in order, the
// empty ones without a fingerprint (the client fills in the empty set's),
// never more than asked; a bounded page carries its bound.
func TestCatalogFingerprintsAndBoundedIDs(t *testing.T) {
	type call struct {
		platform    string
		from, until int64
		slices      int
		cur         CatalogCursor
	}
	calls := make(chan call, 4)
	var full wire.Fingerprint
	full.Add(idOf("a"))
	full.Add(idOf("b"))
	var empty wire.Fingerprint
	answer := []wire.CatalogSlice{full.Slice(), {Fingerprint: [16]byte{9}}, full.Slice(), full.Slice()}
	nodes := newNetwork(t, 2, func(i int) Handlers {
		if i != 0 {
			return Handlers{}
		}
		return Handlers{
			CatalogFingerprints: func(_ context.Context, platform string, from, until int64, slices int) ([]wire.CatalogSlice, error) {
				calls <- call{platform: platform, from: from, until: until, slices: slices}
				return answer, nil // one more than the three asked below
			},
			CatalogIDsUntil: func(_ context.Context, platform string, cur CatalogCursor, until int64) ([]CatalogID, error) {
				calls <- call{platform: platform, cur: cur, until: until}
				return []CatalogID{{Kind: wire.RecordDemand, Time: 7, ID: idOf("d")}}, nil
			},
		}
	})
	server, client := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := client.CatalogFingerprints(ctx, server.ID(), "amd64", 1, 1<<40, 3)
	want := []wire.CatalogSlice{full.Slice(), empty.Slice(), full.Slice()}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("CatalogFingerprints = %+v, %v; want %+v", got, err, want)
	}
	if c := <-calls; c.platform != "amd64" || c.from != 1 || c.until != 1<<40 || c.slices != 3 {
		t.Fatalf("fingerprints handler called with %+v", c)
	}
	if got[0].Count != 2 || wire.CatalogSlicesBytes(got) != 1+1+(1+16)+1+(1+16) {
		t.Fatalf("answer of %d bytes, counts %d", wire.CatalogSlicesBytes(got), got[0].Count)
	}
	after := bytes.Repeat([]byte{3}, 32)
	ids, err := client.CatalogIDsUntil(ctx, server.ID(), "demand/amd64", CatalogCursor{Since: 5, After: after}, 9)
	if err != nil || len(ids) != 1 || ids[0].ID != idOf("d") {
		t.Fatalf("CatalogIDsUntil = %+v, %v", ids, err)
	}
	if c := <-calls; c.platform != "demand/amd64" || c.cur.Since != 5 || !bytes.Equal(c.cur.After, after) || c.until != 9 {
		t.Fatalf("bounded ids handler called with %+v", c)
	}
	if _, err := client.CatalogIDsUntil(ctx, server.ID(), "amd64", CatalogCursor{Since: 5}, 6); err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c.cur.After != nil || c.until != 6 {
		t.Fatalf("a bounded page with no cursor id arrived as %+v", c)
	}

	// Refused before anything is sent.
	for _, r := range []struct {
		from, until int64
		slices      int
	}{{0, 100, 1}, {0, 100, 17}, {5, 5, 2}, {0, 1<<62 + 1, 2}, {10, 12, 3}, {-1, 10, 2}} {
		if _, err := client.CatalogFingerprints(ctx, server.ID(), "amd64", r.from, r.until, r.slices); err == nil {
			t.Fatalf("fingerprints of %d slices of [%d, %d) were asked for", r.slices, r.from, r.until)
		}
	}
	if _, err := client.CatalogIDsUntil(ctx, server.ID(), "amd64", CatalogCursor{Since: 5}, 5); err == nil {
		t.Fatal("a bounded page ending at its cursor was asked for")
	}
	// The client serves neither: not supported, not hung.
	if _, err := server.CatalogFingerprints(ctx, client.ID(), "amd64", 1, 100, 2); !errors.Is(err, wire.ErrNotSupported) {
		t.Fatalf("CatalogFingerprints from a handler-less node: %v, want wire.ErrNotSupported", err)
	}
	if _, err := server.CatalogIDsUntil(ctx, client.ID(), "amd64", CatalogCursor{}, 100); !errors.Is(err, wire.ErrNotSupported) {
		t.Fatalf("CatalogIDsUntil from a handler-less node: %v, want wire.ErrNotSupported", err)
	}
}

// A catalog/3 daemon that predates fingerprints refuses the operation as
// a bad request, as its decoder did; the client reports that as
// wire.ErrNotSupported, so votes lists ids instead.
func TestCatalogFingerprintsFromAnOlderCatalog3(t *testing.T) {
	nodes := newNetwork(t, 2, func(int) Handlers { return Handlers{} })
	nodes[0].Host().SetStreamHandler(CatalogIDsProtocol, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReader(s)
		if op, err := r.ReadByte(); err != nil || op == opCatalogIDs || op == opCatalogRecords {
			return
		}
		_ = writeRefusal(bufio.NewWriter(s), "bad request") // what readCatalogRequest answered an unknown op
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := nodes[1].CatalogFingerprints(ctx, nodes[0].ID(), "amd64", 1, 100, 2)
	if !errors.Is(err, wire.ErrNotSupported) || !errors.Is(err, ErrRefused) {
		t.Fatalf("CatalogFingerprints to an older catalog/3 daemon: %v, want wire.ErrNotSupported", err)
	}
}

func encodeSlices(t testing.TB, sl []wire.CatalogSlice, max int) []byte {
	var buf bytes.Buffer
	if _, err := writeCatalogFingerprints(bufio.NewWriter(&buf), sl, max); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadCatalogFingerprints(t *testing.T) {
	fp := bytes.Repeat([]byte{5}, 16)
	ok := func(k uint64, entries ...[]byte) []byte {
		out := append([]byte{statusOK}, varint.ToUvarint(k)...)
		for _, e := range entries {
			out = append(out, e...)
		}
		return out
	}
	slice := func(count uint64) []byte {
		out := varint.ToUvarint(count)
		if count > 0 {
			out = append(out, fp...)
		}
		return out
	}
	var empty wire.Fingerprint
	full := wire.CatalogSlice{Count: 3, Fingerprint: [16]byte(fp)}
	tests := []struct {
		name    string
		wire    []byte
		want    []wire.CatalogSlice
		wantErr error
	}{
		{"no slice", ok(0), []wire.CatalogSlice{}, nil},
		{"two slices", ok(2, slice(3), slice(0)), []wire.CatalogSlice{full, empty.Slice()}, nil},
		{"more slices than asked", ok(5, slice(0), slice(0), slice(0), slice(0), slice(0)), nil, ErrProtocol},
		{"count over 2^62", ok(1, varint.ToUvarint(1<<62+1)), nil, ErrProtocol},
		{"truncated fingerprint", ok(1, slice(3)[:8]), nil, ErrProtocol},
		{"fewer slices than said", ok(2, slice(3)), nil, ErrProtocol},
		{"trailing data", append(ok(1, slice(0)), 0), nil, ErrProtocol},
		{"refusal", append([]byte{statusRefused}, append(varint.ToUvarint(4), "busy"...)...), nil, ErrRefused},
		{"unknown status", []byte{7}, nil, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCatalogFingerprints(bufio.NewReader(bytes.NewReader(tt.wire)), 4)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("readCatalogFingerprints = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// FuzzReadCatalogFingerprints feeds arbitrary fingerprints answers to the
// client decoder: what it accepts is within the limits and re-encodes to
// the same bytes.
func FuzzReadCatalogFingerprints(f *testing.F) {
	var fp wire.Fingerprint
	fp.Add(idOf("a"))
	f.Add(encodeSlices(f, nil, 16))
	f.Add(encodeSlices(f, []wire.CatalogSlice{fp.Slice(), {}, fp.Slice()}, 16))
	f.Add([]byte{statusRefused, 4, 'b', 'u', 's', 'y'})
	f.Add([]byte{statusOK, 1, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := readCatalogFingerprints(bufio.NewReader(bytes.NewReader(raw)), wire.MaxCatalogSlices)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrRefused) {
				t.Fatalf("error outside the sentinels: %v", err)
			}
			return
		}
		if len(got) > wire.MaxCatalogSlices {
			t.Fatalf("%d slices accepted", len(got))
		}
		if re := encodeSlices(t, got, wire.MaxCatalogSlices); !bytes.Equal(re, raw) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, raw)
		}
		if wire.CatalogSlicesBytes(got) != len(raw) {
			t.Fatalf("CatalogSlicesBytes = %d, the answer has %d", wire.CatalogSlicesBytes(got), len(raw))
		}
	})
}
