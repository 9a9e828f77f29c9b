// Package integration tests gentoo-p2pd the way users run it: several real
// daemons on 127.0.0.1, each with its own state dir, PKGDIR of real
// portage-written binpkgs and libp2p host, finding each other through the
// DHT and gossip; hostile peers built from plain libp2p and GossipSub that
// feed them tampered attestations; and the real gentoo-p2pd binary started,
// SIGTERMed and SIGKILLed as a process. Waits poll with a deadline, never
// sleep. The package holds no code besides its tests and benchmarks.
package integration
