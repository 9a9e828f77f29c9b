// Package portagehook connects gentoo-p2pd to an unmodified portage: a
// loopback binhost gateway that serves a Packages index of trusted builds
// and re-packed GPKGs signed with the daemon's own OpenPGP key (portage's
// own signature verification stays on), the bashrc hook that announces
// fresh builds, and setup-portage, which configures portage for both.
//
// It knows nothing of libp2p: the daemon hands the gateway a Catalog of
// builds it already allowed and a way to materialize them.
//
// # What the index says about files not fetched yet
//
// Portage 3.0.82 treats SIZE as mandatory in practice: BinpkgVerifier
// skips all checks when an entry has no SIZE, but bintree.download_required
// does int(remote_metadata["SIZE"]) as soon as the file sits in the
// binrepo's cache directory — which parallel-fetch puts it in before the
// merge task asks — and emerge dies with KeyError (reproduced with real
// emerge in TestEmergeInstallsFromGateway before this rule existed). SIZE
// of a compressed, signed re-pack cannot be known without its content.
// So the gateway lists a build only once it has been re-packed, with SIZE,
// MD5 and SHA1 of the very file it serves and MTIME equal to that file's
// mtime (portage re-downloads a cached copy whose SIZE or MTIME differs).
// A re-pack is deterministic (fixed mtimes and signature time from
// Listing.Time, fixed zstd settings, entries in portage's order), and is
// cached by (content, BUILD_ID, time, signing key), so the index stays
// true across restarts. Builds get re-packed when the daemon calls
// Prepare, when portage requests the file, or — with PrepareOnIndex — in
// the background when portage fetches the index (IndexWait lets small
// builds appear in that very index). Each change of the index moves
// TIMESTAMP (and Last-Modified, which portage prefers) forward by at least
// one second: portage only re-reads a remote index whose timestamp is
// newer than its cached copy's, and sends If-Modified-Since, answered 304.
//
// # Portage facts this package relies on (3.0.82, lib/ and bin/)
//
//   - Index: header keys sorted; package stanzas sorted by CPV; keys sorted
//     by portage's internal names (_mtime_, repository, DESCRIPTION), which
//     is why MTIME and REPO end each stanza; empty, default and
//     header-inherited (CHOST, REPO) values omitted. VERSION must be
//     present and <= 0, TIMESTAMP present, or the index is dropped.
//   - GPKG: members gpkg-1, metadata.tar.zst(+.sig), image.tar.zst(+.sig),
//     Manifest; Manifest lines "DATA name size HASH hex HASH hex" whose
//     BLAKE2B/SHA512 order follows a frozenset (varies between runs);
//     readers look hashes up by name. An uncompressed image.tar is
//     decompressed with BINPKG_COMPRESS's tool, so it fails by default.
//   - Verification runs gpg --verify --no-auto-check-trustdb --status-fd 2
//     as nobody:nogroup and wants GOODSIG plus TRUST_ULTIMATE/TRUST_FULLY;
//     the keyring (/etc/portage/gnupg) must be readable by nobody and its
//     trustdb current.
//   - bashrc is sourced in every phase and every function it defines is
//     saved into the environment packed as environment.bz2; the hook
//     defines its functions in postinst only. post_* hooks run through
//     __ebuild_phase_with_hooks; unknown FEATURES values pass through to
//     $FEATURES with a warning (unless unknown-features-filter is set).
package portagehook
