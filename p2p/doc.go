// Package p2p is gentoo-p2pd's network layer: one libp2p host with a private
// Kad-DHT (protocol prefix /gentoo-p2p, so it can never join the IPFS DHT), a
// sweeping provider that announces and reprovides build and variant keys,
// GossipSub topics per platform, and request/response stream protocols
// (/gentoo-p2p/attest/1, /gentoo-p2p/catalog/2 and /3, /gentoo-p2p/about/1).
//
// The package knows nothing of portage or of trust: attestations and catalog
// entries are opaque byte slices. The daemon decodes and verifies them
// (package trust) before storing or relaying, and plugs that verification into
// gossip through Handlers.OnGossip. Keeping this package ignorant of payloads
// means a change of attestation format never touches the network code.
package p2p
