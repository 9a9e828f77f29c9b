// Package fit decides whether a build fits the machine portage installs
// onto, so the gateway lists only builds that will run here: an allowed
// build that needs a newer glibc, a library this system lacks, another
// subslot of a library, or instructions this CPU does not have would
// install fine and then break.
//
// Two halves meet in Machine.Fits. Needs is what a build's content
// needs (the highest GLIBC_ symbol version and the x86-64 ISA level its
// ELF files state), derived by Scanner from the image alone, so every
// honest reproducer of the same content derives the same Needs and can
// attest it. Machine is what this system offers: the sonames and slots of
// installed packages (the vdb), the glibc's version definitions and the
// CPU's flags (LoadMachine). Build joins a build's Needs with the rest of
// what the network already agreed on (its descriptor's slot dependencies,
// REQUIRES and resolved compiler flags; SLOT and PROVIDES from the index).
//
// Everything here reads local files only and runs no program except the
// optional gcc of GCCMarch; it imports nothing of ours but xpak and
// identity.
package fit
