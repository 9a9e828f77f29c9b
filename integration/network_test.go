package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestPeerNetwork runs five real daemons on loopback — alice, bob and carol
// built hello and layout (GPKG, GPKG, XPAK), dave built four packages as
// XPAK, erin built nothing — and checks, in order on the same network, that
// builds are found from another peer, that tampered attestations are
// refused and counted, that a deleted build is withdrawn, and that a
// restarted daemon keeps its identity and index without re-reading PKGDIR.
func TestPeerNetwork(t *testing.T) {
	nodes := startNetwork(t, t.TempDir(), []peerSpec{
		{name: "alice", sets: []string{fixtures.ReproGPKG1}},
		{name: "bob", sets: []string{fixtures.ReproGPKG2}},
		{name: "carol", sets: []string{fixtures.ReproXPAK1}},
		{name: "dave", sets: []string{fixtures.XPAKBzip2}},
		{name: "erin", sets: nil},
	})
	alice, bob, carol, erin := nodes[0], nodes[1], nodes[2], nodes[4]

	t.Run("find by build key, variant key and cpv", func(t *testing.T) { testFind(t, alice, erin) })
	t.Run("tampered attestations over gossip", func(t *testing.T) { testTamperedGossip(t, alice, erin) })
	t.Run("tampered attestations over catalog sync", func(t *testing.T) { testTamperedCatalog(t, alice, erin) })
	withdrawn := t.Run("deleted build is withdrawn", func(t *testing.T) { testWithdraw(t, alice, erin) })
	t.Run("restart keeps identity and index, re-announces", func(t *testing.T) {
		if !withdrawn {
			t.Skip("needs the withdrawal of the previous subtest")
		}
		testRestart(t, alice, bob, carol, erin)
	})
}

// testFind: every package alice announced is found from erin by build key,
// by variant key and by cpv, with alice among the providers and alice's
// own signed attestation in erin's store.
func testFind(t *testing.T, alice, erin *testnet.Node) {
	ctx := context.Background()
	lps, err := alice.Daemon.Store().ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	if len(lps) != 2 {
		t.Fatalf("alice indexed %d packages, want hello and layout", len(lps))
	}
	a := alice.Daemon.ID().String()
	for _, lp := range lps {
		for _, q := range []string{lp.BuildKey, lp.VariantKey, lp.CPV} {
			waitFor(t, fmt.Sprintf("erin finds alice's %s by %s", lp.CPV, q), func() bool {
				res, err := erin.Daemon.API().Find(ctx, q)
				return err == nil && foundWith(res, lp.BuildKey, a)
			})
		}
		// The attestation erin holds is alice's own, and it verifies.
		own := ownAttestations(t, erin.Daemon.Store(), lp.BuildKey, a)
		if len(own) != 1 {
			t.Fatalf("erin holds %d attestations by alice for %s, want 1", len(own), lp.CPV)
		}
		s := own[0]
		if s.Attester != alice.Daemon.ID() {
			t.Fatalf("attester %s, want alice %s", s.Attester, alice.Daemon.ID())
		}
		if s.Attestation.FileSHA256 != lp.FileSHA256 || s.Attestation.VariantKey != keys.Variant(lp.VariantKey) ||
			s.Attestation.Content != (trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}) {
			t.Fatalf("alice's attestation for %s does not describe her file", lp.CPV)
		}
		// The variant key itself is announced in the DHT, not only the
		// build key Find looks up.
		vk, err := cid.Decode(lp.VariantKey)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "erin's DHT lists alice for variant key of "+lp.CPV, func() bool {
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			provs, _ := erin.Daemon.Node().FindProviders(fctx, vk, 32)
			return slices.ContainsFunc(provs, func(p peer.AddrInfo) bool { return p.ID == alice.Daemon.ID() })
		})
	}
	// The daemon seeks peers of its platform (network.platform_peers) and
	// status says how many it has.
	waitFor(t, "erin to advertise its platform and report its platform peers", func() bool {
		ps := erin.Daemon.Node().PlatformPeersStatus(erin.Daemon.Platform())
		return ps.Advertised && ps.Connected > 0 && ps.Want == 8 &&
			strings.Contains(erin.Daemon.API().Status(ctx).Discovery, fmt.Sprintf("platform peers on the DHT (%d of 8 wanted connected", ps.Connected))
	})
}

// --- hostile peers ---

// newRawHost is a plain libp2p host on loopback: an attacker that speaks
// the wire protocols without the daemon's code.
func newRawHost(t *testing.T) (host.Host, crypto.PrivKey) {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, priv
}

// tamperedSet derives from one of victim's real attestations a valid
// attestation signed by key, and tampered variants of it that every daemon
// must refuse.
func tamperedSet(t *testing.T, victim *testnet.Node, key crypto.PrivKey) (valid *trust.Signed, tampered map[string][]byte) {
	t.Helper()
	lps, err := victim.Daemon.Store().ListLocal()
	if err != nil || len(lps) < 2 {
		t.Fatalf("victim has %d local packages (%v), want 2", len(lps), err)
	}
	slices.SortFunc(lps, func(a, b store.LocalPackage) int { return cmpString(a.CPV, b.CPV) })
	hello, layout := lps[0], lps[1]
	orig := ownAttestations(t, victim.Daemon.Store(), hello.BuildKey, victim.Daemon.ID().String())
	if len(orig) != 1 {
		t.Fatalf("victim holds %d own attestations for %s", len(orig), hello.CPV)
	}
	base := orig[0].Attestation
	base.Time = time.Now().UTC()
	valid, err = trust.Sign(base, key)
	if err != nil {
		t.Fatal(err)
	}
	tampered = map[string][]byte{}

	// 1. One byte of the image digest changed after signing.
	changed := valid.Attestation
	changed.Content.Image[0] ^= 0x01
	payload, err := json.Marshal(changed)
	if err != nil {
		t.Fatal(err)
	}
	tampered["changed image digest, signature kept"] = (&trust.Signed{Payload: payload, PublicKey: valid.PublicKey, Signature: valid.Signature}).Marshal()

	// 2. Signed by the attacker, presented under the victim's public key:
	// a relay trying to put words in the victim's mouth.
	victimPub, err := crypto.MarshalPublicKey(victimKey(t, victim))
	if err != nil {
		t.Fatal(err)
	}
	tampered["signed by another key than the one it names"] = (&trust.Signed{Payload: valid.Payload, PublicKey: victimPub, Signature: valid.Signature}).Marshal()

	// 3. Correctly signed, but claiming layout's build key for hello's
	// descriptor.
	other := base
	other.BuildKey = keys.Build(layout.BuildKey)
	s, err := trust.Sign(other, key)
	if err != nil {
		t.Fatal(err)
	}
	tampered["other build key, validly signed"] = s.Marshal()

	// 4. Correctly signed, but under another cpv than its descriptor's.
	renamed := base
	renamed.CPV = "sys-libs/glibc-2.40"
	s, err = trust.Sign(renamed, key)
	if err != nil {
		t.Fatal(err)
	}
	tampered["other cpv, validly signed"] = s.Marshal()

	// 5. Signature bytes flipped.
	sig := slices.Clone(valid.Signature)
	sig[len(sig)/2] ^= 0x80
	tampered["flipped signature bit"] = (&trust.Signed{Payload: valid.Payload, PublicKey: valid.PublicKey, Signature: sig}).Marshal()
	return valid, tampered
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// victimKey is the victim's public peer key, as any peer learns it.
func victimKey(t *testing.T, n *testnet.Node) crypto.PubKey {
	t.Helper()
	pk, err := n.Daemon.ID().ExtractPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// checkRejected waits until target stored the valid control attestation
// and counted exactly len(tampered) more rejections, and checks that no
// tampered blob was stored.
func checkRejected(t *testing.T, target *testnet.Node, before int64, valid *trust.Signed, tampered map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	st := target.Daemon.Store()
	want := before + int64(len(tampered))
	waitFor(t, "the valid control attestation is stored", func() bool {
		ok, _ := st.HasAttestation(valid.ID())
		return ok
	})
	waitFor(t, fmt.Sprintf("%d rejections counted in status", len(tampered)), func() bool {
		return target.Daemon.API().Status(ctx).RejectedAttestations >= want
	})
	if got := target.Daemon.API().Status(ctx).RejectedAttestations; got != want {
		t.Errorf("status counts %d rejected attestations, want %d", got, want)
	}
	for name, blob := range tampered {
		if ok, _ := st.HasAttestation(sha256.Sum256(blob)); ok {
			t.Errorf("%s: tampered attestation was stored", name)
		}
	}
	recs, err := st.AttestationsBy(valid.Attester.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].ID != valid.ID() {
		t.Errorf("store holds %d attestations by the attacker, want only the valid control", len(recs))
	}
}

// testTamperedGossip publishes tampered attestations on erin's platform
// topic from a plain GossipSub peer, then one valid attestation.
func testTamperedGossip(t *testing.T, victim, target *testnet.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	h, key := newRawHost(t)
	valid, tampered := tamperedSet(t, victim, key)
	before := target.Daemon.API().Status(ctx).RejectedAttestations

	ps, err := pubsub.NewGossipSub(ctx, h, p2p.GossipSubOptions()...) // the attacker speaks the protocol
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(p2p.TopicName(target.Daemon.Platform()))
	if err != nil {
		t.Fatal(err)
	}
	defer topic.Close()
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Cancel()
	if err := h.Connect(ctx, target.Daemon.Node().AddrInfo()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the target joins the attacker's view of the topic", func() bool {
		return slices.Contains(topic.ListPeers(), target.Daemon.ID())
	})
	// The daemon frames gossip as one tag byte, 'a' for an attestation.
	for _, name := range sortedKeys(tampered) {
		if err := topic.Publish(ctx, append([]byte{'a'}, tampered[name]...)); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	if err := topic.Publish(ctx, append([]byte{'a'}, valid.Marshal()...)); err != nil {
		t.Fatal(err)
	}
	checkRejected(t, target, before, valid, tampered)
}

// testTamperedCatalog serves tampered attestations from a fake peer's
// /gentoo-p2p/catalog/2 handler, written from the wire format in p2p's
// package comment; the target pulls them when the peer connects.
func testTamperedCatalog(t *testing.T, victim, target *testnet.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	h, key := newRawHost(t)
	valid, tampered := tamperedSet(t, victim, key)
	before := target.Daemon.API().Status(ctx).RejectedAttestations
	blobs := [][]byte{}
	for _, name := range sortedKeys(tampered) {
		blobs = append(blobs, tampered[name])
	}
	blobs = append(blobs, valid.Marshal())
	served := make(chan string, 4)
	h.SetStreamHandler(p2p.CatalogProtocol, func(s network.Stream) {
		defer s.Close()
		r := bufio.NewReader(s)
		n, err := binary.ReadUvarint(r)
		if err != nil || n == 0 || n > p2p.MaxPlatformLen {
			s.Reset()
			return
		}
		platform := make([]byte, n)
		if _, err := io.ReadFull(r, platform); err != nil {
			s.Reset()
			return
		}
		if _, err := binary.ReadUvarint(r); err != nil { // since
			s.Reset()
			return
		}
		// Only the platform's attestation pages carry the tampered
		// set; any other catalog (its demand records, "demand/…") is
		// empty, as a daemon without demand answers it.
		page := blobs
		if string(platform) != target.Daemon.Platform() {
			page = nil
		}
		resp := []byte{0x00}
		resp = binary.AppendUvarint(resp, uint64(len(page)))
		for _, b := range page {
			resp = binary.AppendUvarint(resp, uint64(len(b)))
			resp = append(resp, b...)
		}
		s.Write(resp)
		select {
		case served <- string(platform):
		default:
		}
	})
	if err := h.Connect(ctx, target.Daemon.Node().AddrInfo()); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-served:
		if p != target.Daemon.Platform() {
			t.Errorf("target asked for catalog %q, want its platform %q", p, target.Daemon.Platform())
		}
	case <-ctx.Done():
		t.Fatal("the target never asked the new peer for its catalog")
	}
	checkRejected(t, target, before, valid, tampered)
}

func sortedKeys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// testWithdraw deletes hello from alice's PKGDIR: alice stops providing
// its keys and drops her attestation, and erin's Find stops listing alice
// as holding it (erin still reaches alice through the DHT records, which
// outlive a withdrawal, but alice no longer returns her own attestation).
func testWithdraw(t *testing.T, alice, erin *testnet.Node) {
	ctx := context.Background()
	lp := localByName(t, alice, "app-misc/hello-1.0")
	a := alice.Daemon.ID().String()
	res, err := erin.Daemon.API().Find(ctx, lp.BuildKey)
	if err != nil || !foundWith(res, lp.BuildKey, a) {
		t.Fatalf("before deletion erin should find alice's hello: %v %+v", err, res)
	}
	if err := os.Remove(lp.Path); err != nil {
		t.Fatal(err)
	}
	bk, vk := cid.MustParse(lp.BuildKey), cid.MustParse(lp.VariantKey)
	waitFor(t, "alice stops providing hello's build and variant keys", func() bool {
		return !alice.Daemon.Node().Providing(bk) && !alice.Daemon.Node().Providing(vk)
	})
	waitFor(t, "alice's own attestation for hello leaves her store", func() bool {
		return len(ownAttestations(t, alice.Daemon.Store(), lp.BuildKey, a)) == 0
	})
	if _, ok, _ := alice.Daemon.Store().GetLocal(lp.Path); ok {
		t.Error("alice's index still lists the deleted file")
	}
	waitFor(t, "erin's Find no longer lists alice for hello", func() bool {
		res, err := erin.Daemon.API().Find(ctx, lp.BuildKey)
		return err == nil && len(res.Builds) == 1 && !listsProvider(res, lp.BuildKey, a)
	})
	// The other builders still provide it, and alice still provides layout.
	res, err = erin.Daemon.API().Find(ctx, lp.BuildKey)
	if err != nil || len(res.Builds[0].Providers) == 0 {
		t.Errorf("after alice's withdrawal nobody provides hello: %v %+v", err, res)
	}
	layout := localByName(t, alice, "app-misc/layout-1.0-r1")
	if !alice.Daemon.Node().Providing(cid.MustParse(layout.BuildKey)) {
		t.Error("withdrawing hello also withdrew layout")
	}
}

func localByName(t *testing.T, n *testnet.Node, cpv string) store.LocalPackage {
	t.Helper()
	lps, err := n.Daemon.Store().ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	for _, lp := range lps {
		if lp.CPV == cpv {
			return lp
		}
	}
	t.Fatalf("%s has no local %s", n.Name, cpv)
	return store.LocalPackage{}
}
