// Package wire is the vocabulary the daemon's jobs share with the network
// layer: the handlers a node calls, catalog cursors, peer and provider
// facts, wire limits and errors. It depends on no libp2p host, DHT or
// gossip code, so the jobs (and their in-memory test network) reach the
// network through small interfaces without linking it; package p2p
// implements them and re-exports these names.
package wire

import (
	"context"
	"errors"
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
	// OnGossip verifies and takes one gossip message received on a platform
	// topic. It runs as the GossipSub topic validator: returning an error
	// rejects the message, so it is neither delivered nor forwarded and its
	// sender is penalised. from is the message's originator when it names
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
// already superseded): it is dropped without penalising the sender, whereas
// any other error rejects the message as invalid.
var ErrGossipIgnore = errors.New("p2p: gossip message ignored")

// ErrNotJoined is returned by Publish for a platform not joined first.
var ErrNotJoined = errors.New("p2p: platform topic not joined")
