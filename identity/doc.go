// Package identity names builds and their contents so that independent
// honest builders agree on the names and a dishonest one cannot hide
// anything behind them.
//
// It defines the metadata digest v1 (the normalised, security-relevant part
// of a binpkg's metadata, including every shell function and non host-varying
// variable of environment.bz2), the build descriptor with its build key and
// variant key (the DHT keys), and the content id (image digest + metadata
// digest) that peers vote on. docs/PROTOCOL.md, section "Identities",
// specifies every encoding byte for byte; a change to any of them is a
// protocol change and needs a new version string.
//
// The package does no networking and no file reading beyond the optional
// md5-cache loader; it imports nothing of ours but xpak and keys (the
// typed build and variant keys it computes).
package identity
