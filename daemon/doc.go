// Package daemon wires gentoo-p2pd together: it is the only package that
// knows every other one. Data flows one way — PKGDIR files are read (xpak),
// identified (identity), recorded (store), announced (p2p), judged (trust)
// and only then handed to portage (portagehook) — and Run owns every
// goroutine, listener and file it starts.
package daemon
