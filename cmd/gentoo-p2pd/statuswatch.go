package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// clearScreen moves the cursor home and clears the terminal.
const clearScreen = "\x1b[H\x1b[2J"

// statusDraw fetches the status once and writes it as text or JSON.
type statusDraw func(ctx context.Context, w io.Writer) error

// fetchStatus returns the statusDraw of `status` for client c.
func fetchStatus(c *api.Client, asJSON bool) statusDraw {
	return func(ctx context.Context, w io.Writer) error {
		var st api.Status
		if err := c.Get(ctx, api.PathStatus, nil, &st); err != nil {
			return err
		}
		if asJSON {
			return printJSON(w, st)
		}
		return st.WriteText(w, time.Now())
	}
}

// isTerminal reports whether w is a terminal (and so may be cleared).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// watchStatus draws the status every interval until ctx ends (Ctrl-C),
// which is a normal end: it returns nil. On a terminal each draw replaces
// the last one; elsewhere (a pipe, a file) draws follow each other,
// separated by a blank line. The first draw's error is returned as
// `status` would return it; later errors (the daemon restarting) are
// shown in place of the status and watching goes on.
func watchStatus(ctx context.Context, w io.Writer, interval time.Duration, tty bool, draw statusDraw) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 0; ; n++ {
		var frame bytes.Buffer
		err := draw(ctx, &frame)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if n == 0 {
				return err
			}
			frame.Reset()
			fmt.Fprintf(&frame, "status: %v\n", err)
		}
		var out bytes.Buffer
		switch {
		case tty:
			out.WriteString(clearScreen)
			out.Write(frame.Bytes())
			fmt.Fprintf(&out, "\n%s, every %s; Ctrl-C to stop\n", time.Now().Format(time.TimeOnly), interval)
		case n > 0:
			out.WriteString("\n")
			fallthrough
		default:
			out.Write(frame.Bytes())
		}
		if _, err := w.Write(out.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// checkInterval validates --interval.
func checkInterval(watch bool, interval time.Duration, changed bool) error {
	if changed && !watch {
		return errors.New("--interval only applies with --watch")
	}
	if interval <= 0 {
		return fmt.Errorf("--interval %s: must be more than 0", interval)
	}
	return nil
}
