// Package api is the local control interface of gentoo-p2pd: the JSON types
// the daemon serves under /api/v0 on its unix socket, the listener that
// guards that socket, and the client the CLI uses. Daemon and CLI share these
// structs so `--json` prints exactly what the daemon said.
//
// # Errors
//
// A failed call is answered with a JSON body {"error": message, "code":
// code} and the HTTP status of its code:
//
//	bad_request  400  malformed body, empty query, an announce naming
//	                  nothing, an endorsement that does not decode or
//	                  verify, a fetch dir that is not an existing
//	                  absolute directory
//	not_found    404  no such endpoint; nothing in the catalog matches a
//	                  fetch or trust explain query; an announced file
//	                  that does not exist
//	not_allowed  403  the trust policy does not allow the build
//	rejected     422  a well-formed request refused on its merits: a
//	                  file the daemon will not index (outside PKGDIR,
//	                  no binpkg of a CPV, not a binpkg), an
//	                  endorsement it will not keep
//	unavailable  503  the gateway is disabled; no reachable peer
//	                  delivered a verified copy; a timeout
//	internal     500  the daemon failed (its store, its disk)
//
// The client rebuilds the same *Error, so callers test the code with
// errors.As or the predicates (IsNotAllowed, IsNotFound, …). A fetch with
// progress answers a failure before its first line the same way; a
// failure during the stream is its last line, a FetchEvent whose Err is
// the *Error. Finding nothing (find) is an answer with no builds, not an
// error.
package api
