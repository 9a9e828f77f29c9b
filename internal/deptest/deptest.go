// Package deptest holds the one dependency check of the project: which
// packages of ours each package may depend on, directly or through
// another, and which outside packages it must never reach. Its test
// replaces one import check per package, which saw direct imports only.
package deptest
