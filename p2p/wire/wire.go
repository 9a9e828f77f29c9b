// Package wire is the vocabulary the daemon's jobs share with the network
// layer: the handlers a node calls, catalog cursors, peer and provider
// facts, wire limits and errors. It depends on no libp2p host, DHT or
// gossip code, so the jobs (and their in-memory test network) reach the
// network through small interfaces without linking it; package p2p
// implements them and re-exports these names.
package wire

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/bits"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Wire limits (docs/PROTOCOL.md).
const (
	// MaxBlobSize bounds one blob: an attestation, endorsement or gossip
	// message.
	MaxBlobSize = 64 << 10
	// MaxBlobs bounds the blobs of one answer.
	MaxBlobs = 4096
	// MaxResponseBytes bounds one answer.
	MaxResponseBytes = 32 << 20
)

// ErrProtocol means the remote peer broke the wire format or a limit.
var ErrProtocol = errors.New("p2p: protocol violation")

// Handlers are the daemon's callbacks. They receive and return opaque bytes;
// the daemon does all decoding and verification. A nil handler makes the
// node refuse that protocol ("not served") or accept gossip unchecked.
// Every handler may be called concurrently from many goroutines.
type Handlers struct {
	// Attestations returns the attestation blobs held for key (a build or
	// variant key), serving /gentoo-p2p/attest/1. Return an empty list for
	// an unknown key; an error is reported to the peer as "unavailable".
	Attestations func(ctx context.Context, key cid.Cid) ([][]byte, error)
	// Catalog returns the catalog entries of platform after cur, serving
	// /gentoo-p2p/catalog/2 (for daemons that predate catalog/3). Return at most MaxBlobs entries and
	// MaxResponseBytes, in (time, id) order, so the client can page from
	// the last one.
	Catalog func(ctx context.Context, platform string, cur CatalogCursor) ([][]byte, error)
	// CatalogIDs answers an ids page of /gentoo-p2p/catalog/3: the ids
	// of the records Catalog would page, in the same order, at most
	// MaxCatalogIDs of them.
	CatalogIDs func(ctx context.Context, platform string, cur CatalogCursor) ([]CatalogID, error)
	// CatalogRecords answers a records request of /gentoo-p2p/catalog/3:
	// the blobs of the records named by want (Kind and ID; Time is not
	// sent) that are held, in the order asked, within the answer's limits.
	CatalogRecords func(ctx context.Context, want []CatalogID) ([][]byte, error)
	// CatalogIDsUntil answers a bounded ids page of /gentoo-p2p/catalog/3:
	// CatalogIDs' page with no record dated at or after until. A client
	// lists with it the time slices whose fingerprints differ.
	CatalogIDsUntil func(ctx context.Context, platform string, cur CatalogCursor, until int64) ([]CatalogID, error)
	// CatalogFingerprints answers a fingerprints request of
	// /gentoo-p2p/catalog/3: platform's range [from, until) split by
	// SliceBounds into slices, and for each, in order, the count and
	// Fingerprint of the ids an ids page of it would list. It may answer
	// fewer slices than asked (its work bound reached): the client asks
	// again for the rest.
	CatalogFingerprints func(ctx context.Context, platform string, from, until int64, slices int) ([]CatalogSlice, error)
	// OnGossip verifies and takes one gossip message received on a platform
	// topic. It runs as the GossipSub topic validator: returning an error
	// rejects the message as invalid, so it is neither delivered nor
	// forwarded (GossipSub's peer scoring, which would also penalise its
	// sender, is not enabled). from is the message's originator when it names
	// one (the daemon's messages do not: p2p.GossipSubOptions; it is then
	// empty); relay is the peer that delivered the message.
	// It is not called for the node's own publications.
	OnGossip func(from, relay peer.ID, platform string, msg []byte) error
	// About answers /gentoo-p2p/about/1: what this node is (its platform
	// and the settings that make it) and what it holds for query (a CPV,
	// at most MaxAboutQuery bytes), so a peer that finds nothing on its
	// own platform can say why. The answer is at most MaxAboutAnswer bytes.
	About func(ctx context.Context, query string) ([]byte, error)
}

// MaxAboutQuery bounds the query of an about request.
const MaxAboutQuery = 256

// MaxAboutAnswer bounds an about answer (its one blob): a platform, six
// settings with native flags resolved and at most 32 CPVs fit in a few
// KiB; the rest is headroom. A daemon asking 32 peers holds at most 2 MiB.
const MaxAboutAnswer = 64 << 10

// PeerInfo describes one connected peer for `gentoo-p2pd status`.
type PeerInfo struct {
	ID        peer.ID
	Addrs     []ma.Multiaddr // remote addresses of the open connections
	Latency   time.Duration  // moving average of pings; 0 when unmeasured
	Direction string         // "inbound" or "outbound" (of the first connection)
}

// CatalogCursor is where a catalog page starts: after the record with
// time Since and id After (the SHA-256 of its blob), in (time, id) order;
// without After, after every record of second Since. A client continues
// from the last record it got, so no page ever skips a record however
// many share a second.
type CatalogCursor struct {
	Since int64
	After []byte
}

// CatalogID names one record in a catalog/3 ids page: its kind, its
// signed time (Unix seconds; 0 for an endorsement, which rides with the
// attestations of its build key and is not paged by time) and its id, the
// SHA-256 of its blob. A client asks for the records it lacks by kind and
// id.
type CatalogID struct {
	Kind byte
	Time int64
	ID   [32]byte
}

// Record kinds of catalog/3.
const (
	RecordAttestation byte = 'a'
	RecordEndorsement byte = 'e'
	RecordDemand      byte = 'd'
)

// catalog/3 limits (docs/PROTOCOL.md): ids in one page, and ids in one
// records request. A page of ids is at most 4096 × 42 bytes (168 KiB);
// 256 records of the 64 KiB a blob may take are 16 MiB, within
// MaxResponseBytes, and an honest answer of 3 KB attestations is 768 KB.
const (
	MaxCatalogIDs   = 4096
	MaxRecordsAsked = 256
)

// CatalogSlice is one time slice of a catalog/3 fingerprints answer: how
// many ids the slice holds and their Fingerprint.
type CatalogSlice struct {
	Count       uint64
	Fingerprint [16]byte
}

// Bounds of a catalog/3 fingerprints request: the slices asked for, and
// the time a range, a cursor or an id may reach (the wire's bound on a
// time).
const (
	MinCatalogSlices = 2
	MaxCatalogSlices = 16
	MaxCatalogTime   = 1 << 62
)

// SliceBounds splits [from, until) into n slices of equal length (to the
// second): slice i is [b[i], b[i+1]), b[0] = from, b[n] = until. Server
// and client compute the same bounds from the request, so only counts and
// fingerprints cross the wire. It needs 0 <= from < until <= 2^62 and
// 1 <= n <= until-from, so that no slice is empty of seconds.
func SliceBounds(from, until int64, n int) []int64 {
	b := make([]int64, n+1)
	width := uint64(until - from)
	for i := range b {
		// width*i/n in 128 bits: width reaches 2^62.
		hi, lo := bits.Mul64(width, uint64(i))
		q, _ := bits.Div64(hi, lo, uint64(n))
		b[i] = from + int64(q)
	}
	return b
}

// Fingerprint is a set of catalog ids' fingerprint, as Negentropy builds
// it: SHA-256 of the ids' sum (each a 256-bit little-endian integer, mod
// 2^256) and the uvarint of their count, cut to 16 bytes. A sum, unlike an
// XOR, is not linear over GF(2): a signer cannot solve for a subset of
// records whose ids cancel out (docs/PROTOCOL.md).
type Fingerprint struct {
	sum   [4]uint64
	count uint64
}

// Add adds one id to the set (an id added twice counts twice).
func (f *Fingerprint) Add(id [32]byte) {
	var carry uint64
	for i := range f.sum {
		f.sum[i], carry = bits.Add64(f.sum[i], binary.LittleEndian.Uint64(id[8*i:]), carry)
	}
	f.count++
}

// Count is how many ids were added.
func (f *Fingerprint) Count() uint64 { return f.count }

// Slice is the set's count and 16-byte fingerprint.
func (f *Fingerprint) Slice() CatalogSlice {
	var buf [32 + binary.MaxVarintLen64]byte
	for i, w := range f.sum {
		binary.LittleEndian.PutUint64(buf[8*i:], w)
	}
	n := 32 + binary.PutUvarint(buf[32:], f.count)
	sum := sha256.Sum256(buf[:n])
	out := CatalogSlice{Count: f.count}
	copy(out.Fingerprint[:], sum[:16])
	return out
}

// CatalogSlicesBytes is what a fingerprints answer of slices costs on the
// wire: its status, the uvarint of how many, and each slice's uvarint
// count and, when not 0, its 16-byte fingerprint.
func CatalogSlicesBytes(slices []CatalogSlice) int {
	n := 1 + uvarintLen(uint64(len(slices)))
	for _, s := range slices {
		n += uvarintLen(s.Count)
		if s.Count > 0 {
			n += len(s.Fingerprint)
		}
	}
	return n
}

func uvarintLen(v uint64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutUvarint(buf[:], v)
}

// ErrNotSupported means the peer does not speak the protocol asked for (an
// older daemon): the caller may fall back to an older version.
var ErrNotSupported = errors.New("p2p: protocol not supported by peer")

// ProvideStats is the provider's state for `gentoo-p2pd status`.
type ProvideStats struct {
	// Keys is the number of keys registered for (re)providing.
	Keys int
	// ScheduledKeys is the size of the provider's keystore: the keys its
	// reprovide cycle announces. It equals Keys unless a Provide or
	// Withdraw is in flight (or the keystore failed, then -1).
	ScheduledKeys int64
	// Regions is the number of keyspace regions in the reprovide schedule.
	Regions int64
	// Connectivity is the provider's view: "online", "disconnected" (lost
	// the network recently, keeps its schedule) or "offline".
	Connectivity string
	// PendingKeys are keys waiting for their first announcement.
	PendingKeys int64
	// PendingRegionReprovides are keyspace regions whose reprovide is due.
	PendingRegionReprovides int64
	// KeysProvided and KeysFailed count announcements since start
	// (reprovides included).
	KeysProvided, KeysFailed int64
	// ReprovideInterval is the configured reprovide cycle.
	ReprovideInterval time.Duration
	// NextReprovideAt is when the next region is due (zero: nothing
	// scheduled).
	NextReprovideAt time.Time
	// ReprovideLag is how far the schedule runs behind: now minus
	// NextReprovideAt when that is in the past, else 0.
	ReprovideLag time.Duration
}

// ErrGossipIgnore may be returned (wrapped) by Handlers.OnGossip for a
// message that is valid but not worth forwarding (a duplicate, an entry
// already superseded): it is dropped, not forwarded, and not traced as
// invalid, whereas any other error rejects the message as invalid.
var ErrGossipIgnore = errors.New("p2p: gossip message ignored")

// ErrNotJoined is returned by Publish for a platform not joined first.
var ErrNotJoined = errors.New("p2p: platform topic not joined")
