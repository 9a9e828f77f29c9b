// Package api is the local control interface of gentoo-p2pd: the JSON types
// the daemon serves under /api/v0 on its unix socket, the listener that
// guards that socket, and the client the CLI uses. Daemon and CLI share these
// structs so `--json` prints exactly what the daemon said.
package api
