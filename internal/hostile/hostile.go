// Package hostile is an attacker for the test suite and the benchmarks: a
// real libp2p peer with identities of its own that speaks gentoo-p2pd's
// wire protocols the way a hostile peer would — valid signatures over
// lies, floods of junk, relabelled honest builds, slots held without
// reading. It uses only what any peer on the network has (its own keys and
// the public wire formats), so what it achieves against a daemon on
// 127.0.0.1 is what a stranger could.
package hostile

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// Peer is one attacking node. Its network identity (the libp2p host) also
// signs attestations; Identity makes further signing keys (Sybils) that
// need no host of their own.
type Peer struct {
	Node *p2p.Node
	Key  crypto.PrivKey
	ID   peer.ID

	mu      sync.Mutex
	catalog [][]byte
}

// New starts an attacker listening on 127.0.0.1. Its catalog/2 answers
// with whatever SetCatalog holds, ignoring the cursor (a hostile peer need
// not page honestly).
func New(ctx context.Context) (*Peer, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	p := &Peer{Key: key, ID: id}
	cfg := p2p.DefaultConfig()
	cfg.PrivKey = key
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.MDNS, cfg.QUIC, cfg.AutoNAT, cfg.HolePunching, cfg.RelayClient = false, false, false, false, false
	cfg.DHTMode = p2p.DHTServer
	n, err := p2p.New(ctx, cfg, p2p.Handlers{
		Catalog: func(context.Context, string, p2p.CatalogCursor) ([][]byte, error) {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.catalog, nil
		},
	})
	if err != nil {
		return nil, err
	}
	p.Node = n
	return p, nil
}

// Close stops the attacker's node.
func (p *Peer) Close() error { return p.Node.Close() }

// Connect dials a victim by its multiaddr (with /p2p/).
func (p *Peer) Connect(ctx context.Context, addr string) error {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return err
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return err
	}
	return p.Node.Host().Connect(ctx, *ai)
}

// SetCatalog sets what the attacker answers catalog requests with.
func (p *Peer) SetCatalog(blobs [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.catalog = blobs
}

// PublishAttestation gossips an attestation on a platform topic, framed as
// docs/PROTOCOL.md says (tag byte 'a', then the signed blob).
func (p *Peer) PublishAttestation(ctx context.Context, platform string, blob []byte) error {
	if err := p.Node.JoinPlatform(platform); err != nil {
		return err
	}
	return p.Node.Publish(ctx, platform, append([]byte{'a'}, blob...))
}

// Identity is one more signing key: a Sybil, free to make.
func Identity() (crypto.PrivKey, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	return k, err
}

// Platform is the settings of the victim's platform; junk made for it is
// gossiped on and synced into the victim's catalog.
type Platform struct {
	CHOST, CFLAGS, CXXFLAGS, LDFLAGS string
}

// Junk returns a valid attestation of an invented build (build keys are
// free to invent) on platform, padded with index claims to about size
// bytes of signed blob (at most about 60 KiB).
func Junk(key crypto.PrivKey, plat Platform, i int, size int, at time.Time) (*trust.Signed, error) {
	desc := identity.Descriptor{
		CPV: fmt.Sprintf("junk-cat/junk%d-1.0", i), EbuildDigest: fmt.Sprintf("%064x", i),
		Eclasses: map[string]string{}, USE: []string{}, CHOST: plat.CHOST,
		CFLAGS: plat.CFLAGS, CXXFLAGS: plat.CXXFLAGS, LDFLAGS: plat.LDFLAGS,
	}
	raw, err := json.Marshal(desc)
	if err != nil {
		return nil, err
	}
	att := trust.Attestation{
		Version: trust.AttestationVersion, BuildKey: desc.BuildKey(), VariantKey: desc.VariantKey(),
		CPV: desc.CPV, Platform: desc.Platform(), Descriptor: raw,
		Content:    trust.ContentID{Image: sha256.Sum256([]byte(desc.CPV + "image")), Metadata: sha256.Sum256([]byte(desc.CPV))},
		FileSHA256: sha256.Sum256([]byte(desc.CPV + "file")), Size: 4096, PieceSize: 262144, Format: trust.FormatGPKG,
		PieceRoot: sha256.Sum256([]byte(desc.CPV + "root")),
		Time:      at.UTC().Truncate(time.Second),
		Served:    trust.ServedSizes{MetadataTar: 10240, ImageTar: 10240},
	}
	// Base64 makes the blob 4/3 of the payload; index values are capped at
	// 16 KiB each, so the padding is spread over free-text keys.
	pad := size*3/4 - 2048
	att.Index = map[string]string{}
	for _, k := range []string{"DESCRIPTION", "KEYWORDS", "LICENSE"} {
		if pad <= 0 {
			break
		}
		n := min(pad, 15<<10)
		att.Index[k] = strings.Repeat("x", n)
		pad -= n
	}
	return trust.Sign(att, key)
}

// Relabel re-signs an honest attestation with key: same build key,
// descriptor and content (so it votes with the honest attesters), but with
// the attacker's time and index claims merged over the honest ones.
func Relabel(honest *trust.Signed, key crypto.PrivKey, at time.Time, claims map[string]string) (*trust.Signed, error) {
	att := honest.Attestation
	idx := make(map[string]string, len(att.Index)+len(claims))
	for k, v := range att.Index {
		idx[k] = v
	}
	for k, v := range claims {
		idx[k] = v
	}
	att.Index = idx
	att.Time = at.UTC().Truncate(time.Second)
	return trust.Sign(att, key)
}

// HoldCatalog opens a catalog/2 request to target and, once the server
// has taken it, never reads the rest of the answer: the server's write
// stalls once the stream's window is full, and whatever the server
// reserved for the request stays reserved until its deadline. Reset the
// stream to let go.
func (p *Peer) HoldCatalog(ctx context.Context, target peer.ID, platform string) (network.Stream, error) {
	req := binary.AppendUvarint(nil, uint64(len(platform)))
	req = append(req, platform...)
	req = binary.AppendUvarint(req, 0) // since: everything
	return p.hold(ctx, target, p2p.CatalogProtocol, req)
}

// HoldRange asks target over fetch/1 for count pieces of the file with
// this SHA-256 starting at piece first, waits until the provider starts
// answering (it may queue the request for a slot first), and then never
// reads: the provider's write stalls once the stream's window is full, so
// the request holds whatever upload slot the provider gave this identity.
// Reset the stream to let go.
func (p *Peer) HoldRange(ctx context.Context, target peer.ID, file [32]byte, first, count uint64) (network.Stream, error) {
	// docs/PROTOCOL.md, fetch/1: version 1, op 2 (range), file, first, count.
	req := append([]byte{0x01, 0x02}, file[:]...)
	req = binary.AppendUvarint(req, first)
	req = binary.AppendUvarint(req, count)
	return p.hold(ctx, target, fetchProtocol, req)
}

// fetchProtocol is /gentoo-p2p/fetch/1 (docs/PROTOCOL.md).
const fetchProtocol = "/gentoo-p2p/fetch/1"

// hold sends one request and reads only the first byte of the answer:
// both protocols start an answer with 0 when the server took the request.
func (p *Peer) hold(ctx context.Context, target peer.ID, proto protocol.ID, req []byte) (network.Stream, error) {
	s, err := p.Node.Host().NewStream(ctx, target, proto)
	if err != nil {
		return nil, err
	}
	if _, err := s.Write(req); err != nil {
		_ = s.Reset()
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, err
	}
	var status [1]byte
	if _, err := io.ReadFull(s, status[:]); err != nil {
		_ = s.Reset()
		return nil, err
	}
	if status[0] != 0 {
		_ = s.Reset()
		return nil, fmt.Errorf("%w: %s request refused with code %#x", p2p.ErrRefused, proto, status[0])
	}
	return s, nil
}

// Platform is the platform string attestations for p carry.
func (p Platform) Platform() string {
	return identity.Descriptor{CHOST: p.CHOST, CFLAGS: p.CFLAGS, CXXFLAGS: p.CXXFLAGS, LDFLAGS: p.LDFLAGS}.Platform()
}
