// Package daemon wires gentoo-p2pd together: it opens the store and the
// keys, starts the libp2p node, and builds the jobs around it — votes
// (what peers send, checked and bounded), own (this machine's builds),
// materialize (Allowed builds as verified files), binhost (what portage
// sees) and localapi (the socket API) — then owns every goroutine,
// listener and file it starts. Data flows one way: nothing reaches portage
// that votes did not allow and materialize did not verify.
package daemon
