package trust

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// testKey returns a deterministic Ed25519 peer key, so golden files and
// failures reproduce.
func testKey(t testing.TB, n int) crypto.PrivKey {
	t.Helper()
	seed := sha256.Sum256([]byte(fmt.Sprintf("gentoo-p2p test peer %d", n)))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testPeer returns the peer id of testKey(n).
func testPeer(t testing.TB, n int) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(testKey(t, n))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testCID returns a canonical CIDv1 build key derived from s, standing in
// for identity's build keys.
func testCID(t testing.TB, s string) keys.Build {
	t.Helper()
	mh, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return keys.BuildFromCID(cid.NewCidV1(cid.Raw, mh))
}

// testVariant is testCID for variant keys.
func testVariant(t testing.TB, s string) keys.Variant {
	t.Helper()
	return keys.Variant(testCID(t, s))
}

// testContent returns a distinct content id per label.
func testContent(label string) ContentID {
	return ContentID{
		Image:    sha256.Sum256([]byte("image " + label)),
		Metadata: sha256.Sum256([]byte("metadata " + label)),
	}
}

// testAttestation is a complete, valid attestation for buildKey/content.
func testAttestation(t testing.TB, buildKey keys.Build, c ContentID) Attestation {
	t.Helper()
	return Attestation{
		Version:    AttestationVersion,
		BuildKey:   buildKey,
		VariantKey: testVariant(t, "variant of "+string(buildKey)),
		CPV:        "app-misc/hello-1.0",
		Platform:   "x86_64-pc-linux-gnu -O2 -pipe",
		Descriptor: []byte(`{"cpv":"app-misc/hello-1.0","use":["bar"]}`),
		Content:    c,
		FileSHA256: sha256.Sum256([]byte("file " + c.String())),
		Size:       20480,
		PieceRoot:  sha256.Sum256([]byte("pieces " + c.String())),
		PieceSize:  256 << 10,
		Format:     FormatGPKG,
		Builder:    Builder{Portage: "3.0.82", GCC: "12.2.0"},
		Time:       time.Date(2026, 11, 21, 4, 15, 0, 0, time.UTC),
		Served:     ServedSizes{MetadataTar: 10240, ImageTar: 20480},
	}
}

// signAs signs a with testKey(n).
func signAs(t testing.TB, n int, a Attestation) *Signed {
	t.Helper()
	s, err := Sign(a, testKey(t, n))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// labPolicy is the default policy of a closed network where every
// attester counts fully: the vote-counting tests are about counting.
func labPolicy() Policy {
	p := DefaultPolicy()
	p.FreshWeight = FullWeight
	return p
}
