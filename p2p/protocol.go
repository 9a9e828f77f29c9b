package p2p

// Wire formats of the gentoo-p2pd stream protocols.
//
// Both protocols are one request and one response on a fresh libp2p stream
// (multistream-selected by protocol ID, over TLS-or-Noise and yamux). All
// integers are unsigned LEB128 varints in minimal encoding
// (multiformats/go-varint); "frame(x)" is uvarint(len(x)) followed by x.
//
//	/gentoo-p2p/attest/1
//	  request  = frame(cid)                 cid: binary CID of a build or variant
//	                                        key (CIDv1 raw sha2-256), 1..256 bytes
//	  response = 0x00 uvarint(count) count*frame(blob)    success; count may be 0
//	           | 0x01 frame(reason)                        refusal, reason is short
//	                                                       ASCII, at most 256 bytes
//
//	/gentoo-p2p/catalog/2
//	  request  = frame(platform) uvarint(since) [frame(after)]
//	                                        platform: 1..128 bytes, opaque to p2p;
//	                                        since: Unix seconds, 0 = everything,
//	                                        at most 2^62; after: optional, empty
//	                                        or a 32-byte record id: the page
//	                                        starts after (since, after) instead
//	                                        of after the second since
//	  response = same shape as attest/1
//
//	/gentoo-p2p/catalog/3: ids pages and records by id (catalog3.go)
//
//	/gentoo-p2p/about/1
//	  request  = frame(query)               query: 0..256 bytes of UTF-8 (a CPV)
//	  response = same shape as attest/1, with exactly one blob: the
//	             daemon's answer (docs/PROTOCOL.md, "About a peer")
//
// Limits, enforced by both ends: a blob is 1..65536 bytes, count is at most
// 4096, and the blobs of one response total at most 32 MiB. A server drops
// blobs over the limit and truncates the list at the count/total caps (a
// catalog client pages by asking again with a later since); a client treats
// any violation as a protocol error and discards the whole response.
//
// The client half-closes its write side after the request and reads until
// the server closes. The server gives a stream 10 s in total; the client uses
// its context deadline, or 30 s. Blobs are opaque here: attestations and
// catalog entries are self-authenticating, and the daemon verifies them
// before use, so a lying peer costs a wasted round trip, not trust.
//
// Gossip: one GossipSub topic per platform, named
// /gentoo-p2p/catalog/2/<platform>, carrying one opaque blob (at most
// 65536 bytes) per message, unsigned (StrictNoSign) and named by a digest
// of its content: every payload is a self-signed record or an
// announcement of such records' ids. Peers validate every message with
// the daemon's verification before forwarding it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
	"github.com/multiformats/go-varint"
)

// Protocol IDs. The DHT speaks /gentoo-p2p/kad/1.0.0 (dht.ProtocolPrefix).
const (
	// AttestProtocol returns the attestations a peer holds for one key.
	AttestProtocol protocol.ID = "/gentoo-p2p/attest/1"
	// CatalogProtocol returns a peer's catalog entries for one platform, so a
	// newcomer fills its catalog without waiting for gossip.
	CatalogProtocol protocol.ID = "/gentoo-p2p/catalog/2"
	// AboutProtocol returns what a peer is (platform and the settings
	// that make it) and what it holds for a package, so a node that finds
	// nothing on its own platform can say why.
	AboutProtocol protocol.ID = "/gentoo-p2p/about/1"
	// DHTProtocolPrefix keeps our DHT apart from the IPFS one.
	DHTProtocolPrefix protocol.ID = "/gentoo-p2p"
	// TopicPrefix prefixes the per-platform GossipSub topic names. The
	// "2" is the message policy: version 1 (/gentoo-p2p/catalog/<platform>)
	// signed every message, and GossipSub peers of the two policies reject
	// each other's messages.
	TopicPrefix = "/gentoo-p2p/catalog/2/"
)

// Wire limits, see the package wire-format comment above.
const (
	MaxBlobSize      = wire.MaxBlobSize
	MaxBlobs         = wire.MaxBlobs
	MaxResponseBytes = wire.MaxResponseBytes
	MaxPlatformLen   = 128
	maxCIDLen        = 256
	maxReasonLen     = 256

	statusOK      byte = 0x00
	statusRefused byte = 0x01

	serverStreamTimeout = 10 * time.Second
	// requestReadTimeout bounds how long a peer may take to send its
	// (small) request.
	requestReadTimeout  = 5 * time.Second
	clientStreamTimeout = 30 * time.Second
)

// Errors of the stream protocols, for errors.Is.
var (
	// ErrProtocol means the remote peer broke the wire format or a limit.
	ErrProtocol = wire.ErrProtocol
	// ErrRefused means the remote peer answered with a refusal.
	ErrRefused = errors.New("p2p: request refused by peer")
	// ErrBadPlatform means a platform name is empty, too long or not UTF-8.
	ErrBadPlatform = errors.New("p2p: invalid platform name")
	// ErrBadKey means a key is not a defined CID.
	ErrBadKey = errors.New("p2p: invalid key")
)

func checkPlatform(platform string) error {
	if len(platform) == 0 || len(platform) > MaxPlatformLen || !utf8.ValidString(platform) {
		return fmt.Errorf("%w: %q (want 1..%d bytes of UTF-8)", ErrBadPlatform, platform, MaxPlatformLen)
	}
	for _, r := range platform {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %q contains a control character", ErrBadPlatform, platform)
		}
	}
	return nil
}

func writeFrame(w *bufio.Writer, b []byte) error {
	if _, err := w.Write(varint.ToUvarint(uint64(len(b)))); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame of at most max bytes; what names it in errors.
func readFrame(r *bufio.Reader, max int, what string) ([]byte, error) {
	n, err := varint.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %s length: %w", ErrProtocol, what, err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: %s of %d bytes exceeds %d", ErrProtocol, what, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %s body: %w", ErrProtocol, what, err)
	}
	return b, nil
}

// writeBlobs writes a success response, dropping oversized blobs and
// truncating at the caps. It returns how many blobs it sent.
func writeBlobs(w *bufio.Writer, blobs [][]byte) (int, error) {
	keep := make([][]byte, 0, min(len(blobs), MaxBlobs))
	total := 0
	for _, b := range blobs {
		if len(b) == 0 || len(b) > MaxBlobSize {
			continue
		}
		if len(keep) == MaxBlobs || total+len(b) > MaxResponseBytes {
			break
		}
		keep = append(keep, b)
		total += len(b)
	}
	if err := w.WriteByte(statusOK); err != nil {
		return 0, err
	}
	if _, err := w.Write(varint.ToUvarint(uint64(len(keep)))); err != nil {
		return 0, err
	}
	for _, b := range keep {
		if err := writeFrame(w, b); err != nil {
			return 0, err
		}
	}
	return len(keep), w.Flush()
}

func writeRefusal(w *bufio.Writer, reason string) error {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	if err := w.WriteByte(statusRefused); err != nil {
		return err
	}
	if err := writeFrame(w, []byte(reason)); err != nil {
		return err
	}
	return w.Flush()
}

// blobLimits bound one response as it is read: the blob count (exactly
// that many when exact), each blob and their sum.
type blobLimits struct {
	blobs, blobSize, total int
	exact                  bool
}

// responseLimits are the attest and catalog answers' limits.
var responseLimits = blobLimits{blobs: MaxBlobs, blobSize: MaxBlobSize, total: MaxResponseBytes}

// aboutLimits: an about answer is one small blob, refused by its count
// before a byte of it is read, so asking 32 peers holds at most 32 of them.
var aboutLimits = blobLimits{blobs: 1, blobSize: wire.MaxAboutAnswer, total: wire.MaxAboutAnswer, exact: true}

// readBlobs reads an attest or catalog response (readBlobsWithin).
func readBlobs(r *bufio.Reader) ([][]byte, error) { return readBlobsWithin(r, responseLimits) }

// readStatus reads a response's status byte: nil for ok, the server's
// reason for a refusal, ErrProtocol for anything else.
func readStatus(r *bufio.Reader) error {
	status, err := r.ReadByte()
	if err != nil {
		return fmt.Errorf("%w: response status: %w", ErrProtocol, err)
	}
	switch status {
	case statusOK:
		return nil
	case statusRefused:
		reason, err := readFrame(r, maxReasonLen, "refusal reason")
		if err != nil {
			return err
		}
		return refused(reason)
	default:
		return fmt.Errorf("%w: unknown response status 0x%02x", ErrProtocol, status)
	}
}

// readBlobsWithin reads a response and enforces every limit; it also
// requires the server to end the stream after the last blob.
func readBlobsWithin(r *bufio.Reader, lim blobLimits) ([][]byte, error) {
	if err := readStatus(r); err != nil {
		return nil, err
	}
	count, err := varint.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: blob count: %w", ErrProtocol, err)
	}
	if lim.exact && count != uint64(lim.blobs) {
		return nil, fmt.Errorf("%w: %d blobs, want %d", ErrProtocol, count, lim.blobs)
	}
	if count > uint64(lim.blobs) {
		return nil, fmt.Errorf("%w: %d blobs exceed %d", ErrProtocol, count, lim.blobs)
	}
	blobs := make([][]byte, 0, count)
	total := 0
	for i := range count {
		b, err := readFrame(r, lim.blobSize, fmt.Sprintf("blob %d", i))
		if err != nil {
			return nil, err
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: blob %d is empty", ErrProtocol, i)
		}
		total += len(b)
		if total > lim.total {
			return nil, fmt.Errorf("%w: response exceeds %d bytes", ErrProtocol, lim.total)
		}
		blobs = append(blobs, b)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after %d blobs", ErrProtocol, count)
	}
	return blobs, nil
}

// handleAttest serves /gentoo-p2p/attest/1.
func (n *Node) handleAttest(s network.Stream) {
	n.serve(s, AttestProtocol, func(ctx context.Context, r *bufio.Reader, admit func() bool) ([][]byte, string, error) {
		raw, err := readFrame(r, maxCIDLen, "key")
		if err != nil {
			return nil, "bad request", err
		}
		used, key, err := cid.CidFromBytes(raw)
		if err != nil {
			return nil, "bad request", fmt.Errorf("%w: key: %w", ErrProtocol, err)
		}
		if used != len(raw) {
			return nil, "bad request", fmt.Errorf("%w: key has %d trailing bytes", ErrProtocol, len(raw)-used)
		}
		h := n.handlers.Load()
		if h == nil || h.Attestations == nil {
			return nil, ReasonNotServed, nil
		}
		if !admit() {
			return nil, ReasonBusy, nil
		}
		blobs, err := h.Attestations(ctx, key)
		if err != nil {
			return nil, "unavailable", err
		}
		return blobs, "", nil
	})
}

// handleCatalog serves /gentoo-p2p/catalog/2.
func (n *Node) handleCatalog(s network.Stream) {
	n.serve(s, CatalogProtocol, func(ctx context.Context, r *bufio.Reader, admit func() bool) ([][]byte, string, error) {
		raw, err := readFrame(r, MaxPlatformLen, "platform")
		if err != nil {
			return nil, "bad request", err
		}
		platform := string(raw)
		if err := checkPlatform(platform); err != nil {
			return nil, "bad request", err
		}
		since, err := varint.ReadUvarint(r)
		if err != nil || since > 1<<62 {
			return nil, "bad request", fmt.Errorf("%w: since: %v", ErrProtocol, err)
		}
		cur := CatalogCursor{Since: int64(since)}
		if _, err := r.Peek(1); err == nil {
			after, err := readFrame(r, 32, "after")
			if err != nil {
				return nil, "bad request", err
			}
			if len(after) != 0 && len(after) != 32 {
				return nil, "bad request", fmt.Errorf("%w: after has %d bytes", ErrProtocol, len(after))
			}
			cur.After = after
		}
		h := n.handlers.Load()
		if h == nil || h.Catalog == nil {
			return nil, ReasonNotServed, nil
		}
		if !admit() {
			return nil, ReasonBusy, nil
		}
		blobs, err := h.Catalog(ctx, platform, cur)
		if err != nil {
			return nil, "unavailable", err
		}
		return blobs, "", nil
	})
}

// handleAbout serves /gentoo-p2p/about/1.
func (n *Node) handleAbout(s network.Stream) {
	n.serve(s, AboutProtocol, func(ctx context.Context, r *bufio.Reader, admit func() bool) ([][]byte, string, error) {
		raw, err := readFrame(r, wire.MaxAboutQuery, "query")
		if err != nil {
			return nil, "bad request", err
		}
		if !utf8.Valid(raw) {
			return nil, "bad request", fmt.Errorf("%w: query is not UTF-8", ErrProtocol)
		}
		h := n.handlers.Load()
		if h == nil || h.About == nil {
			return nil, ReasonNotServed, nil
		}
		// Rated as well as counted: each answer walks the store.
		if !n.about.Allow(s.Conn().RemotePeer()) || !admit() {
			return nil, ReasonBusy, nil
		}
		answer, err := h.About(ctx, string(raw))
		if err != nil {
			return nil, "unavailable", err
		}
		return [][]byte{answer}, "", nil
	})
}

// About asks peer p what it is and what it holds for query (a CPV). The
// answer is unverified: it says why nothing matched, never what to trust.
func (n *Node) About(ctx context.Context, p peer.ID, query string) ([]byte, error) {
	if len(query) > wire.MaxAboutQuery || !utf8.ValidString(query) {
		return nil, fmt.Errorf("p2p: about query of %d bytes (at most %d of UTF-8)", len(query), wire.MaxAboutQuery)
	}
	blobs, err := n.requestWithin(ctx, p, AboutProtocol, aboutLimits, func(w *bufio.Writer) error {
		return writeFrame(w, []byte(query))
	})
	if err != nil {
		return nil, err
	}
	return blobs[0], nil
}

// ReasonBusy is the refusal a peer gets while it (or everyone) already has
// as many requests open as the limits allow; asking again later works.
const ReasonBusy = "busy"

// ReasonNotServed is the refusal of a node that has no handler for the
// protocol asked: the client sees wire.ErrNotSupported as well as
// ErrRefused, as from a node that lacks the protocol altogether.
const ReasonNotServed = "not served"

// errBadRequest is a refusal as a bad request: from a request this node
// checked before sending, the peer predates the operation.
var errBadRequest = errors.New(`"` + reasonBadRequest + `"`)

// refused is the error of a refusal with reason.
func refused(reason []byte) error {
	if string(reason) == ReasonNotServed {
		return fmt.Errorf("%w: %w: %q", ErrRefused, wire.ErrNotSupported, reason)
	}
	if string(reason) == reasonBadRequest {
		return fmt.Errorf("%w: %w", ErrRefused, errBadRequest)
	}
	return fmt.Errorf("%w: %q", ErrRefused, reason)
}

// requestLimiter counts the attest/catalog requests being served, per peer
// and in total.
type requestLimiter struct {
	mu           sync.Mutex
	perPeer, max int
	total        int
	active       map[peer.ID]int
}

func newRequestLimiter(perPeer, max int) *requestLimiter {
	return &requestLimiter{perPeer: perPeer, max: max, active: make(map[peer.ID]int)}
}

func (l *requestLimiter) acquire(p peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.active[p] >= l.perPeer {
		return false
	}
	l.total++
	l.active[p]++
	return true
}

func (l *requestLimiter) release(p peer.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.active[p]--; l.active[p] <= 0 {
		delete(l.active, p)
	}
}

// serve runs one request/response exchange. answer parses the request,
// calls admit before any work for it (false: refuse as busy), and returns
// the blobs, or a refusal reason (sent to the peer) plus an error (logged
// locally only, so no local detail leaks to the network). A request slot
// is taken only once a request is read, so streams that never send one
// hold nothing but the stream until requestReadTimeout.
func (n *Node) serve(s network.Stream, proto protocol.ID, answer func(context.Context, *bufio.Reader, func() bool) ([][]byte, string, error)) {
	n.serveWith(s, proto, func(ctx context.Context, r *bufio.Reader, admit func() bool) (response, string, error) {
		blobs, reason, err := answer(ctx, r, admit)
		return blobsResponse(blobs), reason, err
	})
}

// response writes a success answer and says how many of the items it had
// it sent.
type response func(w *bufio.Writer) (sent, had int, err error)

// blobsResponse is the blob answer of attest, catalog/2 and about.
func blobsResponse(blobs [][]byte) response {
	return func(w *bufio.Writer) (int, int, error) {
		sent, err := writeBlobs(w, blobs)
		return sent, len(blobs), err
	}
}

// serveWith is serve for an answer of any shape.
func (n *Node) serveWith(s network.Stream, proto protocol.ID, answer func(context.Context, *bufio.Reader, func() bool) (response, string, error)) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(requestReadTimeout))
	_ = s.SetWriteDeadline(time.Now().Add(serverStreamTimeout))
	ctx, cancel := context.WithTimeout(n.ctx, serverStreamTimeout)
	defer cancel()
	remote := s.Conn().RemotePeer()
	w := bufio.NewWriter(s)
	admitted := false
	admit := func() bool {
		admitted = n.requests.acquire(remote)
		return admitted
	}
	resp, reason, err := answer(ctx, bufio.NewReader(s), admit)
	if admitted {
		defer n.requests.release(remote)
	}
	if reason == ReasonBusy {
		n.metrics.servedRequest(proto, "busy")
	}
	if reason != "" {
		if reason != ReasonBusy {
			n.metrics.servedRequest(proto, "refused")
		}
		if err != nil {
			n.log.Debug("refused stream request", "protocol", proto, "peer", remote, "reason", reason, "err", err)
		}
		if werr := writeRefusal(w, reason); werr != nil {
			_ = s.Reset()
		}
		return
	}
	sent, had, err := resp(w)
	if err != nil {
		n.metrics.servedRequest(proto, "error")
		n.log.Debug("write stream response", "protocol", proto, "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	if sent < had {
		n.log.Debug("response trimmed to wire limits", "protocol", proto, "peer", remote, "sent", sent, "had", had)
	}
	n.metrics.servedRequest(proto, "ok")
}

// request opens a stream to p, writes req and reads a blob response.
func (n *Node) request(ctx context.Context, p peer.ID, proto protocol.ID, req func(*bufio.Writer) error) ([][]byte, error) {
	return n.requestWithin(ctx, p, proto, responseLimits, req)
}

// requestWithin is request with the response read within lim.
func (n *Node) requestWithin(ctx context.Context, p peer.ID, proto protocol.ID, lim blobLimits, req func(*bufio.Writer) error) ([][]byte, error) {
	var blobs [][]byte
	err := n.exchange(ctx, p, proto, req, func(r *bufio.Reader) (err error) {
		blobs, err = readBlobsWithin(r, lim)
		return err
	})
	return blobs, err
}

// exchange opens a stream to p, writes req and reads the answer with read.
// A peer that does not speak proto fails with wire.ErrNotSupported.
func (n *Node) exchange(ctx context.Context, p peer.ID, proto protocol.ID, req func(*bufio.Writer) error, read func(*bufio.Reader) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, clientStreamTimeout)
		defer cancel()
	}
	s, err := n.host.NewStream(ctx, p, proto)
	if errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) {
		return fmt.Errorf("p2p: open %s stream to %s: %w: %w", proto, p, wire.ErrNotSupported, err)
	}
	if err != nil {
		return fmt.Errorf("p2p: open %s stream to %s: %w", proto, p, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	deadline, _ := ctx.Deadline()
	_ = s.SetDeadline(deadline)
	w := bufio.NewWriter(s)
	if err := req(w); err != nil {
		_ = s.Reset()
		return fmt.Errorf("p2p: write %s request to %s: %w", proto, p, err)
	}
	if err := w.Flush(); err != nil {
		_ = s.Reset()
		return fmt.Errorf("p2p: write %s request to %s: %w", proto, p, err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return fmt.Errorf("p2p: close %s request to %s: %w", proto, p, err)
	}
	if err := read(bufio.NewReader(s)); err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			return fmt.Errorf("p2p: %s from %s: %w", proto, p, ctx.Err())
		}
		return fmt.Errorf("p2p: %s from %s: %w", proto, p, err)
	}
	_ = s.Close()
	return nil
}

// FetchAttestations asks peer p for the attestations it holds for key (a
// build or variant key). The blobs are unverified: the caller must decode
// and check every one before trusting or relaying it.
func (n *Node) FetchAttestations(ctx context.Context, p peer.ID, key cid.Cid) ([][]byte, error) {
	if !key.Defined() {
		return nil, fmt.Errorf("%w: undefined CID", ErrBadKey)
	}
	return n.request(ctx, p, AttestProtocol, func(w *bufio.Writer) error {
		return writeFrame(w, key.Bytes())
	})
}

// SyncCatalog asks peer p for its catalog entries of platform newer than
// since (Unix seconds, 0 = all). A newcomer calls it once per platform so its
// catalog fills without waiting for gossip; the entries are unverified.
func (n *Node) SyncCatalog(ctx context.Context, p peer.ID, platform string, cur CatalogCursor) ([][]byte, error) {
	if err := checkPlatform(platform); err != nil {
		return nil, err
	}
	if cur.Since < 0 {
		return nil, fmt.Errorf("p2p: catalog since %d is negative", cur.Since)
	}
	if len(cur.After) != 0 && len(cur.After) != 32 {
		return nil, fmt.Errorf("p2p: catalog cursor id has %d bytes, want 32", len(cur.After))
	}
	return n.request(ctx, p, CatalogProtocol, func(w *bufio.Writer) error {
		if err := writeFrame(w, []byte(platform)); err != nil {
			return err
		}
		if _, err := w.Write(varint.ToUvarint(uint64(cur.Since))); err != nil {
			return err
		}
		if len(cur.After) == 0 {
			return nil
		}
		return writeFrame(w, cur.After)
	})
}
