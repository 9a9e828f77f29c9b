// Command gentoo-p2pd is the binary package sharing daemon for Gentoo and its
// command line: one binary, the daemon is `gentoo-p2pd daemon` and every
// other subcommand talks to it over its unix socket or works on local files.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "gentoo-p2pd:", err)
		os.Exit(exitStatus(err))
	}
}

// Exit statuses of a failed command, by the daemon's error code (see the
// root command's help).
const (
	exitFailure     = 1   // anything else
	exitNotFound    = 3   // api.CodeNotFound
	exitNotAllowed  = 4   // api.CodeNotAllowed
	exitUnavailable = 5   // api.CodeUnavailable, or no daemon answers
	exitInterrupted = 130 // interrupted by SIGINT, as shells report it
)

// exitStatus is the exit status for err: scripts can tell "nothing
// matches", "the trust policy refuses" and "try again later" apart.
func exitStatus(err error) int {
	if errors.Is(err, api.ErrNotRunning) {
		return exitUnavailable
	}
	switch api.CodeOf(err) {
	case api.CodeNotFound:
		return exitNotFound
	case api.CodeNotAllowed:
		return exitNotAllowed
	case api.CodeUnavailable:
		return exitUnavailable
	}
	return exitFailure
}

// exitError carries an exit status for a failure already reported to the
// user (inspect prints one error per bad file, then exits 1).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
