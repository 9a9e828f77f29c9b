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
		os.Exit(1)
	}
}

// exitError carries an exit status for a failure already reported to the
// user (inspect prints one error per bad file, then exits 1).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
