package votes

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p/wire"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// maxForeignEndorsements caps endorsements per build key by signers this
// daemon does not trust itself.
const maxForeignEndorsements = 8

// gossipTagEndorsement marks a build-server endorsement on a platform topic.
const gossipTagEndorsement = 'n'

// endorsementMagic starts an endorsement blob, so a relay that mixes
// endorsements into attestation lists cannot have one mistaken for the other.
var endorsementMagic = []byte("gentoo-p2p endorsement v1\n")

// Endorsement is a build-server signature over (build key, content id) as it
// travels between peers: the statement and the signature, self-contained.
type Endorsement struct {
	BuildKey    keys.Build        `json:"build_key"`
	Platform    string            `json:"platform"`
	Content     trust.ContentID   `json:"content"`
	Endorsement trust.Endorsement `json:"endorsement"`
}

// Marshal encodes e for the wire.
func (e Endorsement) Marshal() []byte {
	b, _ := json.Marshal(e)
	return append(append([]byte(nil), endorsementMagic...), b...)
}

// DecodeEndorsement parses and verifies a wire endorsement. Whether its
// signer counts is the policy's business, not the decoder's.
func DecodeEndorsement(blob []byte) (Endorsement, error) {
	var e Endorsement
	if !bytes.HasPrefix(blob, endorsementMagic) || len(blob) > 4096 {
		return e, fmt.Errorf("not an endorsement")
	}
	dec := json.NewDecoder(bytes.NewReader(blob[len(endorsementMagic):]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("endorsement: %w", err)
	}
	if err := e.Endorsement.Verify(e.BuildKey, e.Content); err != nil {
		return e, err
	}
	return e, nil
}

// NewEndorsement signs (build key, content) with a build server's key.
func NewEndorsement(buildKey keys.Build, platform string, c trust.ContentID, priv ed25519.PrivateKey) Endorsement {
	return Endorsement{BuildKey: buildKey, Platform: platform, Content: c, Endorsement: trust.Endorse(buildKey, c, priv)}
}

// IngestEndorsement verifies, stores and (when new) gossips an endorsement.
func (vb *Book) IngestEndorsement(ctx context.Context, blob []byte, from peer.ID, publish bool) (bool, error) {
	e, err := DecodeEndorsement(blob)
	if err == nil {
		_, err = e.BuildKey.CID()
	}
	if err != nil {
		vb.reject("endorsement", from, err)
		return false, err
	}
	// Endorsements by signers this daemon trusts are always kept; others
	// are relayed for the users who do trust them, but only a few per
	// build key, so nobody can grow this store without limit.
	if !vb.configuredSigner(e.Endorsement.SignerKey) {
		// Build keys are free to invent: a foreign endorsement is kept only
		// for a build key someone attested, so the attesters' budgets bound
		// these too. The local user's own `signer endorse` is always kept.
		if recs, err := vb.store.AttestationsFor(string(e.BuildKey)); err != nil {
			return false, err
		} else if len(recs) == 0 && from != vb.self {
			return false, fmt.Errorf("%w: endorsement for %s, which nobody attested here", wire.ErrGossipIgnore, e.BuildKey)
		}
		if have, err := vb.store.EndorsementsFor(string(e.BuildKey)); err != nil {
			return false, err
		} else if len(have) >= maxForeignEndorsements {
			return false, fmt.Errorf("%s already has %d endorsements by signers not configured here", e.BuildKey, len(have))
		}
	}
	added, err := vb.store.PutEndorsement(string(e.BuildKey), e.Marshal())
	if err != nil || !added {
		return added, err
	}
	if publish && vb.net != nil && e.Platform != "" {
		if err := vb.announce(ctx, e.Platform, wire.RecordEndorsement, e.Marshal()); err != nil {
			vb.log.Debug("gossip endorsement", "build_key", e.BuildKey, "err", err) // stored; peers get it by catalog sync
		}
	}
	return true, nil
}

// configuredSigner reports whether key is one of trust.signers: only their
// endorsements back a build here; others are relayed for other users.
func (vb *Book) configuredSigner(key ed25519.PublicKey) bool {
	return slices.ContainsFunc(vb.policy.Signers, func(k ed25519.PublicKey) bool { return bytes.Equal(k, key) })
}

// endorsementsFor returns the verified endorsements held for a build key,
// grouped by content id.
func (vb *Book) endorsementsFor(buildKey keys.Build) map[trust.ContentID][]trust.Endorsement {
	blobs, err := vb.store.EndorsementsFor(string(buildKey))
	if err != nil {
		return nil
	}
	out := map[trust.ContentID][]trust.Endorsement{}
	for _, b := range blobs {
		e, err := DecodeEndorsement(b)
		if err != nil || e.BuildKey != buildKey {
			continue
		}
		out[e.Content] = append(out[e.Content], e.Endorsement)
	}
	return out
}

// pgpCache remembers OpenPGP checks per (container file, content id): a
// file's bytes never change under its SHA-256, so neither does the answer.
type pgpCache struct {
	mu sync.Mutex
	ok map[string]bool
}

// pgpVerified reports whether a locally held file backs the attestation's
// content like a signer does: the file is the one the attestation names,
// its own digests are the attested content of the attested build key, and
// it carries valid OpenPGP signatures by the configured keyring (portage's
// binhost keyring, say). Without the digest check any attestation could
// borrow the signature of an unrelated signed file.
func (vb *Book) pgpVerified(a trust.Attestation) bool {
	if len(vb.policy.PGPKeyring) == 0 {
		return false
	}
	key := hex.EncodeToString(a.FileSHA256[:]) + "/" + string(a.BuildKey) + "/" + a.Content.String()
	vb.pgp.mu.Lock()
	if v, ok := vb.pgp.ok[key]; ok {
		vb.pgp.mu.Unlock()
		return v
	}
	vb.pgp.mu.Unlock()
	path := ""
	if lps, _ := vb.store.LocalBySHA(a.FileSHA256); len(lps) > 0 {
		lp := lps[0]
		if lp.BuildKey == string(a.BuildKey) && lp.ImageDigest == a.Content.Image && lp.MetadataDigest == a.Content.Metadata {
			path = lp.Path
		}
	} else if e, ok, _ := vb.store.Cache().Get(a.FileSHA256); ok && e.Meta.BuildKey == string(a.BuildKey) {
		if identity.CheckFile(e.Path, a.CPV, a.Content.Image, a.Content.Metadata, vb.files) == nil {
			path = e.Path
		}
	}
	v := path != "" && trust.VerifyGPKGSignatures(path, vb.policy.PGPKeyring) == nil
	vb.pgp.mu.Lock()
	if vb.pgp.ok == nil {
		vb.pgp.ok = map[string]bool{}
	}
	vb.pgp.ok[key] = v
	vb.pgp.mu.Unlock()
	return v
}

// EndorsePackage computes a binpkg's build key and content id and signs
// them with a build server's key (`gentoo-p2pd signer endorse`).
func EndorsePackage(pkg *xpak.Package, priv ed25519.PrivateKey) (Endorsement, error) {
	md, err := identity.MetadataDigest(pkg.Metadata)
	if err != nil {
		return Endorsement{}, fmt.Errorf("%s: %w", pkg.Path, err)
	}
	desc, err := identity.DescriptorFromMetadata(pkg.Metadata, nil)
	if err != nil {
		return Endorsement{}, fmt.Errorf("%s: %w", pkg.Path, err)
	}
	// A build server endorses what it built here: native flags mean its CPU.
	if desc, err = desc.ResolveNative(identity.GCCNative(context.Background(), identity.GCCFor(desc.CHOST))); err != nil {
		return Endorsement{}, fmt.Errorf("%s: %w", pkg.Path, err)
	}
	c := trust.ContentID{Image: pkg.ImageDigest, Metadata: md}
	return NewEndorsement(desc.BuildKey(), desc.Platform(), c, priv), nil
}
