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
// Flags that say "native" (-march=native, -mtune=native, -mcpu=native)
// mean other code on every CPU, so local builds' descriptors and the local
// platform are resolved first (ResolveNative, with GCCNative asking the
// compiler what the flag means here) and descriptors from the network that
// still say native are refused.
//
// The package does no networking and no file reading beyond the optional
// md5-cache loader, and runs no program but the compiler driver in
// GCCNative; it imports nothing of ours but xpak and keys (the typed build
// and variant keys it computes).
package identity
