// Package jobtest is the shared harness of the unit tests of the daemon's
// jobs (votes, own, materialize, binhost, localapi): the portage fixtures
// identified as the daemon identifies them, attestations signed for them,
// and a peer (a store, a votes Book and an in-memory network node serving
// the Book as the daemon's p2p node does).
//
// It is test support only: nothing but _test.go files imports it, and no
// production package may (internal/deptest lists it among the wiring
// packages). Because it imports votes, the internal tests of package votes
// cannot use it; votes' tests that need it are in package votes_test.
package jobtest
