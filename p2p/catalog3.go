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
//	ids answer     = 0x00 uvarint(count) count*(kind uvarint(time) [32]id)
//	                 | 0x01 frame(reason)
//	                 count at most MaxCatalogIDs, time at most 2^62
//	records answer = the blob answer of catalog/2, at most as many
//	                 blobs as ids asked
//
// A client checks what the records answer holds against what it asked
// (package votes): p2p only enforces the framing and the counts.

import (
	"bufio"
	"context"
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
	opCatalogIDs     byte = 0x01
	opCatalogRecords byte = 0x02
)

// maxSince bounds a cursor's or an id's time on the wire.
const maxSince = 1 << 62

// CatalogID is wire.CatalogID.
type CatalogID = wire.CatalogID

func validKind(k byte) bool {
	return k == wire.RecordAttestation || k == wire.RecordEndorsement || k == wire.RecordDemand
}

// catalogRequest is a decoded catalog/3 request: an ids page (platform
// and cursor) or a records request (want).
type catalogRequest struct {
	op       byte
	platform string
	cur      CatalogCursor
	want     []CatalogID
}

// writeCatalogRequest encodes req.
func writeCatalogRequest(w *bufio.Writer, req catalogRequest) error {
	if err := w.WriteByte(req.op); err != nil {
		return err
	}
	if req.op == opCatalogIDs {
		if err := writeFrame(w, []byte(req.platform)); err != nil {
			return err
		}
		if _, err := w.Write(varint.ToUvarint(uint64(req.cur.Since))); err != nil {
			return err
		}
		if len(req.cur.After) == 0 {
			return nil
		}
		return writeFrame(w, req.cur.After)
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
	case opCatalogIDs:
		raw, err := readFrame(r, MaxPlatformLen, "platform")
		if err != nil {
			return req, err
		}
		req.platform = string(raw)
		if err := checkPlatform(req.platform); err != nil {
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
		if _, err := r.Peek(1); err == nil {
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
		return req, nil
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
			return nil, "bad request", err
		}
		h := n.handlers.Load()
		if h == nil || (req.op == opCatalogIDs && h.CatalogIDs == nil) || (req.op == opCatalogRecords && h.CatalogRecords == nil) {
			return nil, ReasonNotServed, nil
		}
		if !admit() {
			return nil, ReasonBusy, nil
		}
		if req.op == opCatalogIDs {
			ids, err := h.CatalogIDs(ctx, req.platform, req.cur)
			if err != nil {
				return nil, "unavailable", err
			}
			return func(w *bufio.Writer) (int, int, error) {
				sent, err := writeCatalogIDs(w, ids)
				return sent, len(ids), err
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
