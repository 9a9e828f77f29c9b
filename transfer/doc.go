// Package transfer moves container files between peers over the libp2p
// protocol /gentoo-p2p/fetch/1 (wire format: see ProtocolID).
//
// A Server answers requests for files a Source holds, within upload slots
// and bandwidth caps, or refuses everything in consume mode. Fetch pulls one
// file from several providers at once, verifies every piece against the
// Merkle root an attestation carries (package pieces), survives bad,
// stalling and vanishing providers, resumes after a crash, and makes the
// file visible at its final path only once it is complete and verified. A
// caller's FetchOptions.Check (the daemon's: Manifest, image and metadata
// digests) reads the verified pieces while they arrive, so no byte is read
// again after the last piece.
//
// The package works on any host.Host and knows nothing of the DHT or of
// portage: the daemon finds providers and decides what to trust.
package transfer
