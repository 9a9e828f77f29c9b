package p2p

// /gentoo-p2p/catalog/3: catalog sync by ids. catalog/2 answers pages of
// whole signed records, so a daily full sync re-sent every record a
// client already held from gossip; catalog/3 answers the ids of a page,
// and the client asks for the records it lacks by id.
//
//	request = 0x01 frame(platform) uvarint(since) [frame(after)]
//	                                 ids page, cursor as in catalog/2
//	        | 0x02 uvarint(count) count*(kind [32]id)
//	                                 records, count 1..MaxRecordsAsked,
//	                                 kind 'a', 'e' or 'd'
//	        | 0x03 frame(platform) uvarint(from) uvarint(until) uvarint(slices)
//	                                 fingerprints of [from, until) in
//	                                 slices (wire.SliceBounds): from <
//	                                 until <= 2^62, slices 2..16 and at
//	                                 most until-from
//	        | 0x04 frame(platform) uvarint(since) frame(after) uvarint(until)
//	                                 ids page as 0x01 (after empty or 32
//	                                 bytes), of records dated before
//	                                 until, since < until <= 2^62
//	ids answer     = 0x00 uvarint(count) count*(kind uvarint(time) [32]id)
//	                 | 0x01 frame(reason)
//	                 count at most MaxCatalogIDs, time at most 2^62
//	records answer = the blob answer of catalog/2, at most as many
//	                 blobs as ids asked
//	fingerprints answer = 0x00 uvarint(k) k*(uvarint(count) [[16]fingerprint])
//	                 | 0x01 frame(reason)
//	                 the first k <= slices slices in order, count at most
//	                 2^62, the fingerprint only when count > 0 (that of
//	                 the empty set is known)
//
// A daemon that predates 0x03 refuses it as a bad request: the client
// reports that as wire.ErrNotSupported and lists ids instead. A client
// checks what the records answer holds against what it asked, and an ids
// page against its cursor and bound (package votes): p2p only enforces
// the framing and the counts.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-varint"
)

// CatalogIDsProtocol pages a peer's catalog by record id and answers the
// records asked for by id.
const CatalogIDsProtocol protocol.ID = "/gentoo-p2p/catalog/3"

// Operations of a catalog/3 request.
const (
	opCatalogIDs          byte = 0x01
	opCatalogRecords      byte = 0x02
	opCatalogFingerprints byte = 0x03
	opCatalogIDsUntil     byte = 0x04
)

// reasonBadRequest is the refusal of a request that does not decode; a
// daemon that predates an operation answers it so.
const reasonBadRequest = "bad request"

// maxSince bounds a cursor's or an id's time on the wire.
const maxSince = wire.MaxCatalogTime

// CatalogID is wire.CatalogID.
type CatalogID = wire.CatalogID

func validKind(k byte) bool {
	return k == wire.RecordAttestation || k == wire.RecordEndorsement || k == wire.RecordDemand
}

// catalogRequest is a decoded catalog/3 request: an ids page (platform,
// cursor and, for opCatalogIDsUntil, until), a records request (want) or
// a fingerprints request (platform, from, until, slices).
type catalogRequest struct {
	op       byte
	platform string
	cur      CatalogCursor
	want     []CatalogID
	from     int64
	until    int64
	slices   int
}

// checkFingerprintRange checks a fingerprints request's range and slices.
func checkFingerprintRange(from, until int64, slices int) error {
	if from < 0 || from >= until || until > maxSince {
		return fmt.Errorf("%w: fingerprint range [%d, %d) is empty or beyond 2^62", ErrProtocol, from, until)
	}
	if slices < wire.MinCatalogSlices || slices > wire.MaxCatalogSlices || int64(slices) > until-from {
		return fmt.Errorf("%w: %d slices of [%d, %d), want %d..%d and at most one a second", ErrProtocol, slices, from, until, wire.MinCatalogSlices, wire.MaxCatalogSlices)
	}
	return nil
}

// writeCatalogRequest encodes req.
func writeCatalogRequest(w *bufio.Writer, req catalogRequest) error {
	if err := w.WriteByte(req.op); err != nil {
		return err
	}
	switch req.op {
	case opCatalogIDs, opCatalogIDsUntil:
		if err := writeFrame(w, []byte(req.platform)); err != nil {
			return err
		}
		if _, err := w.Write(varint.ToUvarint(uint64(req.cur.Since))); err != nil {
			return err
		}
		if req.op == opCatalogIDs && len(req.cur.After) == 0 {
			return nil
		}
		if err := writeFrame(w, req.cur.After); err != nil {
			return err
		}
		if req.op == opCatalogIDs {
			return nil
		}
		_, err := w.Write(varint.ToUvarint(uint64(req.until)))
		return err
	case opCatalogFingerprints:
		if err := writeFrame(w, []byte(req.platform)); err != nil {
			return err
		}
		for _, v := range []uint64{uint64(req.from), uint64(req.until), uint64(req.slices)} {
			if _, err := w.Write(varint.ToUvarint(v)); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := w.Write(varint.ToUvarint(uint64(len(req.want)))); err != nil {
		return err
	}
	for _, id := range req.want {
		if err := w.WriteByte(id.Kind); err != nil {
			return err
		}
		if _, err := w.Write(id.ID[:]); err != nil {
			return err
		}
	}
	return nil
}

// readCatalogRequest decodes a catalog/3 request and enforces its limits.
// It does not require the end of the stream: the server stops reading
// once the request is whole.
func readCatalogRequest(r *bufio.Reader) (catalogRequest, error) {
	op, err := r.ReadByte()
	if err != nil {
		return catalogRequest{}, fmt.Errorf("%w: operation: %w", ErrProtocol, err)
	}
	req := catalogRequest{op: op}
	switch op {
	case opCatalogIDs, opCatalogIDsUntil:
		if err := readPlatform(r, &req); err != nil {
			return req, err
		}
		since, err := varint.ReadUvarint(r)
		if err != nil {
			return req, fmt.Errorf("%w: since: %w", ErrProtocol, err)
		}
		if since > maxSince {
			return req, fmt.Errorf("%w: since %d exceeds 2^62", ErrProtocol, since)
		}
		req.cur.Since = int64(since)
		// An ids page's after is optional; a bounded page's is not.
		if _, err := r.Peek(1); err == nil || op == opCatalogIDsUntil {
			after, err := readFrame(r, 32, "after")
			if err != nil {
				return req, err
			}
			if len(after) != 0 && len(after) != 32 {
				return req, fmt.Errorf("%w: after has %d bytes, want 32", ErrProtocol, len(after))
			}
			if len(after) == 32 {
				req.cur.After = after
			}
		}
		if op == opCatalogIDs {
			return req, nil
		}
		until, err := varint.ReadUvarint(r)
		if err != nil {
			return req, fmt.Errorf("%w: until: %w", ErrProtocol, err)
		}
		if until > maxSince || until <= since {
			return req, fmt.Errorf("%w: until %d not in (since %d, 2^62]", ErrProtocol, until, since)
		}
		req.until = int64(until)
		return req, nil
	case opCatalogFingerprints:
		if err := readPlatform(r, &req); err != nil {
			return req, err
		}
		var v [3]uint64
		for i, what := range []string{"from", "until", "slices"} {
			if v[i], err = varint.ReadUvarint(r); err != nil {
				return req, fmt.Errorf("%w: %s: %w", ErrProtocol, what, err)
			}
			if v[i] > maxSince {
				return req, fmt.Errorf("%w: %s %d exceeds 2^62", ErrProtocol, what, v[i])
			}
		}
		req.from, req.until, req.slices = int64(v[0]), int64(v[1]), int(v[2])
		return req, checkFingerprintRange(req.from, req.until, req.slices)
	case opCatalogRecords:
		count, err := varint.ReadUvarint(r)
		if err != nil {
			return req, fmt.Errorf("%w: record count: %w", ErrProtocol, err)
		}
		if count == 0 || count > wire.MaxRecordsAsked {
			return req, fmt.Errorf("%w: %d records asked, want 1..%d", ErrProtocol, count, wire.MaxRecordsAsked)
		}
		req.want = make([]CatalogID, count)
		for i := range req.want {
			k, err := r.ReadByte()
			if err != nil {
				return req, fmt.Errorf("%w: record %d kind: %w", ErrProtocol, i, err)
			}
			if !validKind(k) {
				return req, fmt.Errorf("%w: record %d has unknown kind 0x%02x", ErrProtocol, i, k)
			}
			req.want[i].Kind = k
			if _, err := io.ReadFull(r, req.want[i].ID[:]); err != nil {
				return req, fmt.Errorf("%w: record %d id: %w", ErrProtocol, i, err)
			}
		}
		return req, nil
	default:
		return req, fmt.Errorf("%w: unknown catalog/3 operation 0x%02x", ErrProtocol, op)
	}
}

// readPlatform reads and checks a request's platform into req.
func readPlatform(r *bufio.Reader, req *catalogRequest) error {
	raw, err := readFrame(r, MaxPlatformLen, "platform")
	if err != nil {
		return err
	}
	req.platform = string(raw)
	return checkPlatform(req.platform)
}

// writeCatalogFingerprints writes a success answer of slices, at most
// max of them (the slices asked for).
func writeCatalogFingerprints(w *bufio.Writer, slices []wire.CatalogSlice, max int) (int, error) {
	slices = slices[:min(len(slices), max)]
	if err := w.WriteByte(statusOK); err != nil {
		return 0, err
	}
	if _, err := w.Write(varint.ToUvarint(uint64(len(slices)))); err != nil {
		return 0, err
	}
	for _, sl := range slices {
		if _, err := w.Write(varint.ToUvarint(min(sl.Count, maxSince))); err != nil {
			return 0, err
		}
		if sl.Count == 0 {
			continue
		}
		if _, err := w.Write(sl.Fingerprint[:]); err != nil {
			return 0, err
		}
	}
	return len(slices), w.Flush()
}

// readCatalogFingerprints reads a fingerprints answer of at most max
// slices and enforces every limit; the server must end the stream after
// the last slice. A slice of count 0 gets the empty set's fingerprint.
func readCatalogFingerprints(r *bufio.Reader, max int) ([]wire.CatalogSlice, error) {
	if err := readStatus(r); err != nil {
		return nil, err
	}
	k, err := varint.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: slice count: %w", ErrProtocol, err)
	}
	if k > uint64(max) {
		return nil, fmt.Errorf("%w: %d slices, %d asked", ErrProtocol, k, max)
	}
	var empty wire.Fingerprint
	out := make([]wire.CatalogSlice, k)
	for i := range out {
		c, err := varint.ReadUvarint(r)
		if err != nil {
			return nil, fmt.Errorf("%w: slice %d count: %w", ErrProtocol, i, err)
		}
		if c > maxSince {
			return nil, fmt.Errorf("%w: slice %d count %d exceeds 2^62", ErrProtocol, i, c)
		}
		if c == 0 {
			out[i] = empty.Slice()
			continue
		}
		out[i].Count = c
		if _, err := io.ReadFull(r, out[i].Fingerprint[:]); err != nil {
			return nil, fmt.Errorf("%w: slice %d fingerprint: %w", ErrProtocol, i, err)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after %d slices", ErrProtocol, k)
	}
	return out, nil
}

// writeCatalogIDs writes a success answer of ids, dropping those the wire
// cannot carry (an unknown kind, a time out of range) and truncating at
// MaxCatalogIDs.
func writeCatalogIDs(w *bufio.Writer, ids []CatalogID) (int, error) {
	keep := make([]CatalogID, 0, min(len(ids), wire.MaxCatalogIDs))
	for _, id := range ids {
		if !validKind(id.Kind) || id.Time < 0 || id.Time > maxSince {
			continue
		}
		if len(keep) == wire.MaxCatalogIDs {
			break
		}
		keep = append(keep, id)
	}
	if err := w.WriteByte(statusOK); err != nil {
		return 0, err
	}
	if _, err := w.Write(varint.ToUvarint(uint64(len(keep)))); err != nil {
		return 0, err
	}
	for _, id := range keep {
		if err := w.WriteByte(id.Kind); err != nil {
			return 0, err
		}
		if _, err := w.Write(varint.ToUvarint(uint64(id.Time))); err != nil {
			return 0, err
		}
		if _, err := w.Write(id.ID[:]); err != nil {
			return 0, err
		}
	}
	return len(keep), w.Flush()
}

// readCatalogIDs reads an ids answer and enforces every limit; the server
// must end the stream after the last id.
func readCatalogIDs(r *bufio.Reader) ([]CatalogID, error) {
	if err := readStatus(r); err != nil {
		return nil, err
	}
	count, err := varint.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: id count: %w", ErrProtocol, err)
	}
	if count > wire.MaxCatalogIDs {
		return nil, fmt.Errorf("%w: %d ids exceed %d", ErrProtocol, count, wire.MaxCatalogIDs)
	}
	ids := make([]CatalogID, count)
	for i := range ids {
		k, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("%w: id %d kind: %w", ErrProtocol, i, err)
		}
		if !validKind(k) {
			return nil, fmt.Errorf("%w: id %d has unknown kind 0x%02x", ErrProtocol, i, k)
		}
		t, err := varint.ReadUvarint(r)
		if err != nil {
			return nil, fmt.Errorf("%w: id %d time: %w", ErrProtocol, i, err)
		}
		if t > maxSince {
			return nil, fmt.Errorf("%w: id %d time %d exceeds 2^62", ErrProtocol, i, t)
		}
		ids[i].Kind, ids[i].Time = k, int64(t)
		if _, err := io.ReadFull(r, ids[i].ID[:]); err != nil {
			return nil, fmt.Errorf("%w: id %d: %w", ErrProtocol, i, err)
		}
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after %d ids", ErrProtocol, count)
	}
	return ids, nil
}

// handleCatalogIDs serves /gentoo-p2p/catalog/3. Both operations count
// against limits.peer_requests and limits.requests like every request.
func (n *Node) handleCatalogIDs(s network.Stream) {
	n.serveWith(s, CatalogIDsProtocol, func(ctx context.Context, r *bufio.Reader, admit func() bool) (response, string, error) {
		req, err := readCatalogRequest(r)
		if err != nil {
			return nil, reasonBadRequest, err
		}
		h := n.handlers.Load()
		if h == nil || (req.op == opCatalogIDs && h.CatalogIDs == nil) || (req.op == opCatalogRecords && h.CatalogRecords == nil) ||
			(req.op == opCatalogIDsUntil && h.CatalogIDsUntil == nil) || (req.op == opCatalogFingerprints && h.CatalogFingerprints == nil) {
			return nil, ReasonNotServed, nil
		}
		if !admit() {
			return nil, ReasonBusy, nil
		}
		switch req.op {
		case opCatalogIDs, opCatalogIDsUntil:
			var ids []CatalogID
			if req.op == opCatalogIDs {
				ids, err = h.CatalogIDs(ctx, req.platform, req.cur)
			} else {
				ids, err = h.CatalogIDsUntil(ctx, req.platform, req.cur, req.until)
			}
			if err != nil {
				return nil, "unavailable", err
			}
			return func(w *bufio.Writer) (int, int, error) {
				sent, err := writeCatalogIDs(w, ids)
				return sent, len(ids), err
			}, "", nil
		case opCatalogFingerprints:
			slices, err := h.CatalogFingerprints(ctx, req.platform, req.from, req.until, req.slices)
			if err != nil {
				return nil, "unavailable", err
			}
			return func(w *bufio.Writer) (int, int, error) {
				sent, err := writeCatalogFingerprints(w, slices, req.slices)
				return sent, len(slices), err
			}, "", nil
		}
		blobs, err := h.CatalogRecords(ctx, req.want)
		if err != nil {
			return nil, "unavailable", err
		}
		if len(blobs) > len(req.want) {
			blobs = blobs[:len(req.want)] // the client refuses more
		}
		return blobsResponse(blobs), "", nil
	})
}

// CatalogIDs asks peer p for one ids page of platform's catalog after
// cur (catalog/3). A peer that predates catalog/3 fails with
// wire.ErrNotSupported. The ids are unverified claims about the peer's
// catalog.
func (n *Node) CatalogIDs(ctx context.Context, p peer.ID, platform string, cur CatalogCursor) ([]CatalogID, error) {
	if err := checkPlatform(platform); err != nil {
		return nil, err
	}
	if cur.Since < 0 || cur.Since > maxSince {
		return nil, fmt.Errorf("p2p: catalog since %d out of range", cur.Since)
	}
	if len(cur.After) != 0 && len(cur.After) != 32 {
		return nil, fmt.Errorf("p2p: catalog cursor id has %d bytes, want 32", len(cur.After))
	}
	var ids []CatalogID
	err := n.exchange(ctx, p, CatalogIDsProtocol, func(w *bufio.Writer) error {
		return writeCatalogRequest(w, catalogRequest{op: opCatalogIDs, platform: platform, cur: cur})
	}, func(r *bufio.Reader) (err error) {
		ids, err = readCatalogIDs(r)
		return err
	})
	return ids, err
}

// CatalogIDsUntil is CatalogIDs for a page of records dated before until
// (catalog/3's bounded ids page, for the slices reconciliation lists). A
// peer that predates it refuses it (wire.ErrNotSupported).
func (n *Node) CatalogIDsUntil(ctx context.Context, p peer.ID, platform string, cur CatalogCursor, until int64) ([]CatalogID, error) {
	if err := checkPlatform(platform); err != nil {
		return nil, err
	}
	if cur.Since < 0 || until <= cur.Since || until > maxSince {
		return nil, fmt.Errorf("p2p: catalog ids page [%d, %d) out of range", cur.Since, until)
	}
	if len(cur.After) != 0 && len(cur.After) != 32 {
		return nil, fmt.Errorf("p2p: catalog cursor id has %d bytes, want 32", len(cur.After))
	}
	var ids []CatalogID
	err := n.exchange(ctx, p, CatalogIDsProtocol, func(w *bufio.Writer) error {
		return writeCatalogRequest(w, catalogRequest{op: opCatalogIDsUntil, platform: platform, cur: cur, until: until})
	}, func(r *bufio.Reader) (err error) {
		ids, err = readCatalogIDs(r)
		return err
	})
	return ids, notServedIfBad(err)
}

// CatalogFingerprints asks peer p for the count and fingerprint of each
// of slices time slices of platform's [from, until) (wire.SliceBounds):
// at most slices of them, the first ones in order. A peer that predates
// the operation fails with wire.ErrNotSupported. The answer is an
// unverified claim about the peer's catalog.
func (n *Node) CatalogFingerprints(ctx context.Context, p peer.ID, platform string, from, until int64, slices int) ([]wire.CatalogSlice, error) {
	if err := checkPlatform(platform); err != nil {
		return nil, err
	}
	if err := checkFingerprintRange(from, until, slices); err != nil {
		return nil, err
	}
	var out []wire.CatalogSlice
	err := n.exchange(ctx, p, CatalogIDsProtocol, func(w *bufio.Writer) error {
		return writeCatalogRequest(w, catalogRequest{op: opCatalogFingerprints, platform: platform, from: from, until: until, slices: slices})
	}, func(r *bufio.Reader) (err error) {
		out, err = readCatalogFingerprints(r, slices)
		return err
	})
	return out, notServedIfBad(err)
}

// notServedIfBad reports a request this node checked before sending and
// the peer refused as bad as wire.ErrNotSupported: the peer predates the
// operation (catalog/3 before fingerprints).
func notServedIfBad(err error) error {
	if errors.Is(err, errBadRequest) {
		return fmt.Errorf("%w: %w", wire.ErrNotSupported, err)
	}
	return err
}

// CatalogRecords asks peer p for the records named by want (1 to
// MaxRecordsAsked, by kind and id; Time is not sent). The answer holds at
// most len(want) blobs; whether they are the ones asked for is for the
// caller to check, and every blob is unverified.
func (n *Node) CatalogRecords(ctx context.Context, p peer.ID, want []CatalogID) ([][]byte, error) {
	if len(want) == 0 || len(want) > wire.MaxRecordsAsked {
		return nil, fmt.Errorf("p2p: %d records asked, want 1..%d", len(want), wire.MaxRecordsAsked)
	}
	for i, id := range want {
		if !validKind(id.Kind) {
			return nil, fmt.Errorf("p2p: record %d has unknown kind 0x%02x", i, id.Kind)
		}
	}
	lim := responseLimits
	lim.blobs = len(want)
	var blobs [][]byte
	err := n.exchange(ctx, p, CatalogIDsProtocol, func(w *bufio.Writer) error {
		return writeCatalogRequest(w, catalogRequest{op: opCatalogRecords, want: want})
	}, func(r *bufio.Reader) (err error) {
		blobs, err = readBlobsWithin(r, lim)
		return err
	})
	return blobs, err
}
