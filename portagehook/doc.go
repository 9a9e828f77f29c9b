// Package portagehook connects gentoo-p2pd to an unmodified portage: a
// loopback binhost gateway that serves a Packages index of trusted builds
// and re-packed GPKGs signed with the daemon's own OpenPGP key (portage's
// own signature verification stays on), the bashrc hook that announces
// fresh builds, and setup-portage, which configures portage for both.
//
// It knows nothing of libp2p: the daemon hands the gateway a Catalog of
// builds it already allowed and a way to materialize them.
package portagehook
