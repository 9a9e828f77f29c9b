// Package trust decides whether a build may reach portage.
//
// A binpkg fetched from strangers is only as good as the evidence behind it,
// so this package holds everything that turns evidence into a decision and
// nothing that moves bytes over a network:
//
//   - signed attestations ("I built build key B and got content C"), signed
//     with the attester's libp2p Ed25519 peer key and self-authenticating, so
//     any peer may relay them (Sign, Decode, Signed);
//   - endorsements by configured build-server Ed25519 keys (Endorse);
//   - the user's policy (Policy) and the verdict it yields for one build key
//     (Evaluate, Verdict.Explain);
//   - equivocation evidence: two signed attestations in which one peer claims
//     two different contents for one build key (DetectEquivocation);
//   - OpenPGP verification of GPKG containers as portage does it
//     (VerifyGPKGSignatures, LoadKeyring).
//
// The package is deliberately self-contained: identity types reach it as
// the leaf vocabulary of keys (keys.Build, keys.Variant: canonical CID
// strings), opaque JSON (descriptors) and plain digests (ContentID), so it
// can be reviewed and fuzzed on its own.
// docs/SECURITY.md explains what each check protects against and what it
// does not.
package trust
