package memnet_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/hostile"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
)

func newID(t *testing.T) peer.ID {
	t.Helper()
	k, err := hostile.Identity()
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func key(t *testing.T, s string) cid.Cid {
	t.Helper()
	h, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

type inbox struct{ got []string }

func (in *inbox) handlers() wire.Handlers {
	return wire.Handlers{OnGossip: func(from, relay peer.ID, platform string, msg []byte) error {
		in.got = append(in.got, platform+":"+string(msg))
		return nil
	}}
}

// Gossip reaches every other online member on the topic, through its
// validator, and nobody else.
func TestPublishReachesSubscribedOnlineMembers(t *testing.T) {
	n := memnet.New()
	a, b, c, d := n.Join(newID(t)), n.Join(newID(t)), n.Join(newID(t)), n.Join(newID(t))
	if again := n.Join(a.ID()); again != a {
		t.Fatal("joining twice made a second node")
	}
	var ib, ic, id inbox
	b.Serve(ib.handlers())
	c.Serve(ic.handlers())
	d.Serve(id.handlers())
	ctx := context.Background()
	if err := a.Publish(ctx, "amd64", []byte("x")); !errors.Is(err, wire.ErrNotJoined) {
		t.Fatalf("publish before joining: %v, want ErrNotJoined", err)
	}
	for _, nd := range []*memnet.Node{a, b, d} {
		if err := nd.JoinPlatform("amd64"); err != nil {
			t.Fatal(err)
		}
	}
	d.SetOnline(false)
	if err := a.Publish(ctx, "amd64", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if len(ib.got) != 1 || ib.got[0] != "amd64:hello" {
		t.Errorf("subscriber got %q", ib.got)
	}
	if len(ic.got) != 0 || len(id.got) != 0 {
		t.Errorf("unsubscribed got %q, offline got %q", ic.got, id.got)
	}
	if a.Published() != 2 {
		t.Errorf("Published = %d, want 2 (the refused one counts)", a.Published())
	}
	a.SetOnline(false)
	if err := a.Publish(ctx, "amd64", []byte("late")); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("offline publisher: %v, want ErrOffline", err)
	}
}

// Requests go to the named member's handlers; an offline member, an
// unknown one or one serving nothing answers with an error.
func TestRequestsRouteToHandlers(t *testing.T) {
	n := memnet.New()
	a, b := n.Join(newID(t)), n.Join(newID(t))
	ctx := context.Background()
	if _, err := a.SyncCatalog(ctx, b.ID(), "amd64", wire.CatalogCursor{}); !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("catalog from a member serving nothing: %v", err)
	}
	if _, err := a.FetchAttestations(ctx, b.ID(), key(t, "k")); !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("attestations from a member serving nothing: %v", err)
	}
	b.Serve(wire.Handlers{
		Catalog: func(_ context.Context, platform string, cur wire.CatalogCursor) ([][]byte, error) {
			return [][]byte{[]byte(platform), {byte(cur.Since)}}, nil
		},
		Attestations: func(_ context.Context, k cid.Cid) ([][]byte, error) { return [][]byte{[]byte(k.String())}, nil },
	})
	page, err := a.SyncCatalog(ctx, b.ID(), "amd64", wire.CatalogCursor{Since: 7})
	if err != nil || len(page) != 2 || string(page[0]) != "amd64" || page[1][0] != 7 {
		t.Fatalf("catalog page %q, %v", page, err)
	}
	k := key(t, "k")
	atts, err := a.FetchAttestations(ctx, b.ID(), k)
	if err != nil || len(atts) != 1 || string(atts[0]) != k.String() {
		t.Fatalf("attestations %q, %v", atts, err)
	}
	if _, err := a.SyncCatalog(ctx, newID(t), "amd64", wire.CatalogCursor{}); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("catalog from a stranger: %v", err)
	}
	b.SetOnline(false)
	if _, err := a.FetchAttestations(ctx, b.ID(), k); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("attestations from an offline member: %v", err)
	}
	if _, ok := a.DirectAddr(b.ID()); ok {
		t.Error("an offline member has a direct address")
	}
	if len(a.Peers()) != 0 {
		t.Errorf("peers with the only other member offline: %v", a.Peers())
	}
}

// Providers: what a member provides is found (up to max) until it withdraws
// it or goes offline; stats count it.
func TestProvidersAndAddresses(t *testing.T) {
	n := memnet.New()
	a, b, c := n.Join(newID(t)), n.Join(newID(t)), n.Join(newID(t))
	ctx := context.Background()
	k, other := key(t, "build"), key(t, "other")
	for _, nd := range []*memnet.Node{b, c} {
		if err := nd.Provide(k, k); err != nil {
			t.Fatal(err)
		}
	}
	if !b.Providing(k) || b.Providing(other) {
		t.Fatal("Providing does not follow Provide")
	}
	if st, err := b.ProvideStats(ctx); err != nil || st.Keys != 1 {
		t.Fatalf("stats %+v, %v: want one key", st, err)
	}
	provs, err := a.FindProviders(ctx, k, 8)
	if err != nil || len(provs) != 2 || provs[0].ID != b.ID() || len(provs[0].Addrs) != 1 {
		t.Fatalf("providers %v, %v", provs, err)
	}
	if provs, _ := a.FindProviders(ctx, k, 1); len(provs) != 1 {
		t.Errorf("max 1 gave %d providers", len(provs))
	}
	c.SetOnline(false)
	if provs, _ := a.FindProviders(ctx, k, 8); len(provs) != 1 || provs[0].ID != b.ID() {
		t.Errorf("an offline provider is found: %v", provs)
	}
	if err := c.Provide(other); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("offline Provide: %v", err)
	}
	if err := b.Withdraw(k); err != nil || b.Providing(k) {
		t.Fatalf("withdraw: %v, still providing %v", err, b.Providing(k))
	}
	if provs, _ := a.FindProviders(ctx, k, 8); len(provs) != 0 {
		t.Errorf("withdrawn key still found: %v", provs)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.FindProviders(cctx, k, 8); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled lookup: %v", err)
	}

	if ip, ok := a.DirectAddr(b.ID()); !ok || ip != b.Addr() || !ip.IsLoopback() {
		t.Errorf("direct address %v %v, want %v on loopback", ip, ok, b.Addr())
	}
	if got := a.KnownAddrs(b.ID()); len(got) != 1 || !got[0].Equal(b.Addrs()[0]) {
		t.Errorf("known addresses of a member %v", got)
	}
	stranger := newID(t)
	if len(a.KnownAddrs(stranger)) != 0 {
		t.Error("addresses known for a stranger")
	}
	a.RememberAddrs(peer.AddrInfo{ID: stranger, Addrs: b.Addrs()})
	if got := a.KnownAddrs(stranger); len(got) != 1 {
		t.Errorf("remembered addresses %v", got)
	}
	if a.Reachability() != "public" {
		t.Errorf("reachability %q", a.Reachability())
	}
	if ps := a.Peers(); len(ps) != 1 || ps[0].ID != b.ID() {
		t.Errorf("peers %v, want b (c is offline)", ps)
	}
}

// Connect reaches an online member and remembers the address given;
// itself, an offline member and a stranger are refused.
func TestConnect(t *testing.T) {
	n := memnet.New()
	a, b := n.Join(newID(t)), n.Join(newID(t))
	ctx := context.Background()
	addr := b.Addrs()[0]
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: []multiaddr.Multiaddr{addr}}); err != nil {
		t.Fatalf("Connect to an online member: %v", err)
	}
	if got := a.KnownAddrs(b.ID()); len(got) != 1 || !got[0].Equal(addr) {
		t.Errorf("known addrs %v, want %v", got, addr)
	}
	if err := a.Connect(ctx, peer.AddrInfo{ID: a.ID()}); err == nil {
		t.Error("Connect to itself succeeded")
	}
	if err := a.Connect(ctx, peer.AddrInfo{ID: newID(t)}); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("Connect to a stranger: %v, want ErrOffline", err)
	}
	b.SetOnline(false)
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID()}); !errors.Is(err, memnet.ErrOffline) {
		t.Errorf("Connect to an offline member: %v, want ErrOffline", err)
	}
}

// catalog/3 as p2p has it: a member without the handlers is an older
// daemon (wire.ErrNotSupported), the wire limits are enforced, and what
// crosses is counted as p2p frames it.
func TestCatalogIDsAndRecords(t *testing.T) {
	n := memnet.New()
	a, b := n.Join(newID(t)), n.Join(newID(t))
	ctx := context.Background()
	if _, err := a.CatalogIDs(ctx, b.ID(), "amd64", wire.CatalogCursor{}); !errors.Is(err, wire.ErrNotSupported) {
		t.Errorf("ids from a member without catalog/3: %v", err)
	}
	want := []wire.CatalogID{{Kind: wire.RecordAttestation, ID: [32]byte{1}}}
	if _, err := a.CatalogRecords(ctx, b.ID(), want); !errors.Is(err, wire.ErrNotSupported) {
		t.Errorf("records from a member without catalog/3: %v", err)
	}
	ids := []wire.CatalogID{{Kind: wire.RecordAttestation, Time: 1_700_000_000, ID: [32]byte{1}}}
	b.Serve(wire.Handlers{
		CatalogIDs: func(_ context.Context, platform string, _ wire.CatalogCursor) ([]wire.CatalogID, error) {
			switch platform {
			case "many":
				return make([]wire.CatalogID, wire.MaxCatalogIDs+1), nil
			case "kind":
				return []wire.CatalogID{{Kind: 'x', Time: 1, ID: [32]byte{1}}}, nil
			case "late":
				return []wire.CatalogID{{Kind: wire.RecordAttestation, Time: 1<<62 + 1, ID: [32]byte{1}}}, nil
			case "negative":
				return []wire.CatalogID{{Kind: wire.RecordAttestation, Time: -1, ID: [32]byte{1}}}, nil
			}
			return ids, nil
		},
		CatalogRecords: func(_ context.Context, w []wire.CatalogID) ([][]byte, error) {
			return [][]byte{[]byte("record"), []byte("unasked")}[:len(w)+1], nil
		},
	})
	before := a.BytesIn()
	got, err := a.CatalogIDs(ctx, b.ID(), "amd64", wire.CatalogCursor{})
	if err != nil || len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("ids %+v, %v", got, err)
	}
	if in := a.BytesIn() - before; in != 2+1+5+32 {
		t.Errorf("an ids page of one counted as %d bytes, want %d", in, 2+1+5+32)
	}
	if _, err := a.CatalogIDs(ctx, b.ID(), "many", wire.CatalogCursor{}); !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("a page over MaxCatalogIDs: %v, want ErrProtocol", err)
	}
	for _, bad := range []string{"kind", "late", "negative"} {
		if _, err := a.CatalogIDs(ctx, b.ID(), bad, wire.CatalogCursor{}); !errors.Is(err, wire.ErrProtocol) {
			t.Errorf("an id of %s: %v, want ErrProtocol", bad, err)
		}
	}
	if _, err := a.CatalogRecords(ctx, b.ID(), []wire.CatalogID{{Kind: 'x'}}); err == nil || !strings.Contains(err.Error(), "unknown kind") {
		t.Error("a record of unknown kind was asked for")
	}
	if _, err := a.CatalogRecords(ctx, b.ID(), want); !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("more records than asked: %v, want ErrProtocol", err)
	}
	if _, err := a.CatalogRecords(ctx, b.ID(), nil); err == nil {
		t.Error("an empty records request was sent")
	}
}

// catalog/3 reconciliation on memnet: a member without it is an older
// daemon; a range out of bounds is not sent; an answer is trimmed to the
// slices asked, its empty slices carry the empty set's fingerprint, and
// its bytes are counted as p2p frames them; a bounded page is counted
// and checked as an ids page.
func TestCatalogFingerprintsAndBoundedIDs(t *testing.T) {
	n := memnet.New()
	a, b := n.Join(newID(t)), n.Join(newID(t))
	ctx := context.Background()
	if _, err := a.CatalogFingerprints(ctx, b.ID(), "amd64", 1, 100, 2); !errors.Is(err, wire.ErrNotSupported) {
		t.Errorf("fingerprints from a member without them: %v", err)
	}
	if _, err := a.CatalogIDsUntil(ctx, b.ID(), "amd64", wire.CatalogCursor{}, 100); !errors.Is(err, wire.ErrNotSupported) {
		t.Errorf("a bounded page from a member without it: %v", err)
	}
	var fp wire.Fingerprint
	fp.Add([32]byte{1})
	b.Serve(wire.Handlers{
		CatalogFingerprints: func(context.Context, string, int64, int64, int) ([]wire.CatalogSlice, error) {
			return []wire.CatalogSlice{fp.Slice(), {Fingerprint: [16]byte{7}}, fp.Slice()}, nil
		},
		CatalogIDsUntil: func(context.Context, string, wire.CatalogCursor, int64) ([]wire.CatalogID, error) {
			return []wire.CatalogID{{Kind: 'x', Time: 1, ID: [32]byte{1}}}, nil
		},
	})
	before := a.BytesIn()
	got, err := a.CatalogFingerprints(ctx, b.ID(), "amd64", 1, 100, 2)
	var empty wire.Fingerprint
	if err != nil || len(got) != 2 || got[0] != fp.Slice() || got[1] != empty.Slice() {
		t.Fatalf("fingerprints %+v, %v", got, err)
	}
	if in := a.BytesIn() - before; in != 1+1+(1+16)+1 {
		t.Errorf("an answer of two slices counted as %d bytes, want %d", in, 1+1+(1+16)+1)
	}
	for _, r := range [][3]int64{{0, 100, 1}, {0, 100, 17}, {5, 5, 2}, {10, 12, 3}, {0, 1<<62 + 1, 2}} {
		if _, err := a.CatalogFingerprints(ctx, b.ID(), "amd64", r[0], r[1], int(r[2])); err == nil {
			t.Errorf("fingerprints of %d slices of [%d, %d) were asked for", r[2], r[0], r[1])
		}
	}
	if _, err := a.CatalogIDsUntil(ctx, b.ID(), "amd64", wire.CatalogCursor{Since: 5}, 5); err == nil {
		t.Error("a bounded page ending at its cursor was asked for")
	}
	if _, err := a.CatalogIDsUntil(ctx, b.ID(), "amd64", wire.CatalogCursor{}, 100); !errors.Is(err, wire.ErrProtocol) {
		t.Errorf("a bounded page with an id of unknown kind: %v, want ErrProtocol", err)
	}
}
