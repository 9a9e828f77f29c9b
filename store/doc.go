// Package store keeps the daemon's durable state in one crash-safe bbolt
// database (state.db in the state directory): the index of local binpkgs
// (PKGDIR), their piece layers, the attestations and equivocation evidence
// collected from peers, status counters, and the metadata of the content
// cache of fetched package files.
//
// Every write is a single bbolt transaction, so a crash at any instant
// leaves primary records and their secondary indexes consistent; Check
// proves it after the fact. Content cache files are written beside the
// database as temp + fsync + rename, and the database references a file
// only once it is complete.
//
// The store holds opaque blobs plus the index fields its caller supplies: it
// imports nothing else of gentoo-p2pd, so the trust and identity rules live
// in one place (their own packages) and never leak into storage.
package store
