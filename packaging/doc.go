// Package packaging holds no code: it is the home of the service files
// (systemd user and system units, OpenRC init script and conf.d), the
// ebuild, and the tests that check them with the real tools.
package packaging
