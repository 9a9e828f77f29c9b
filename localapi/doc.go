// Package localapi serves the daemon's local API on its unix socket: the
// handlers behind `gentoo-p2pd status`, find, fetch, announce, endorse and
// trust, with the wire types of package api.
package localapi
