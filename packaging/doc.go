// Package packaging holds no code: it is the home of the service files
// (systemd user and system units, OpenRC init script and conf.d), the
// ebuilds (net-p2p/gentoo-p2pd and the acct-user and acct-group packages
// it depends on), and the tests that check them with the real tools,
// including a `make install` into an empty DESTDIR.
package packaging
