// Package config turns the daemon's configuration sources into one plain
// Config struct: command-line flags beat GENTOO_P2PD_* environment
// variables, which beat the TOML config file, which beats built-in
// defaults. It is the only package that imports viper, so no other package
// depends on how settings are layered.
//
// It also reads portage's own settings (PKGDIR, CHOST, the *FLAGS, ARCH and
// the gentoo repository) the way portage does — `portageq` when portage is
// installed, otherwise make.conf and the profile — because a build's
// identity depends on them and the daemon must agree with portage about
// them. Anything set in the daemon's config wins over what was probed.
//
// The package is a leaf: it imports nothing of ours.
package config
