package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ErrDaemonRunning is returned by Listen when a live daemon already answers
// on the socket: a second daemon must never steal the socket of the first.
var ErrDaemonRunning = errors.New("another gentoo-p2pd is already running on this socket")

// Listen opens the unix socket at path with mode 0600. A socket file left
// behind by a crashed daemon is removed; one that a live daemon still answers
// on is left alone and ErrDaemonRunning is returned.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("api socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("api socket %s: exists and is not a socket; refusing to replace it", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		switch {
		case err == nil:
			_ = c.Close() // a probe: nothing was sent
			return nil, fmt.Errorf("api socket %s: %w", path, ErrDaemonRunning)
		case errors.Is(err, syscall.ECONNREFUSED):
			// Nobody answers: a stale socket from a daemon that died.
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("api socket %s: removing stale socket: %w", path, err)
			}
		case errors.Is(err, os.ErrNotExist):
			// Removed since the Lstat: nothing to clean up.
		default:
			// A timeout or a full backlog (EAGAIN) may be a live, busy
			// daemon: its socket is never removed on a guess.
			return nil, fmt.Errorf("api socket %s: cannot tell whether a daemon answers there: %w", path, err)
		}
	}
	// The socket is made 0600 right after it is created. The umask is not
	// narrowed around net.Listen: it is process-wide, and other goroutines
	// (several daemons in one test or demo process) create files meanwhile.
	// The brief window between bind and chmod is harmless: the directory
	// was made 0700 above (the default, $XDG_RUNTIME_DIR, is the user's own
	// 0700 runtime dir), so no other local user can reach the socket.
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close() // the chmod error is the one to report
		return nil, fmt.Errorf("api socket %s: %w", path, err)
	}
	return l, nil
}

// dialer connects to the daemon's socket whatever host the URL names.
func dialer(path string) func(ctx context.Context, _, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}

// SystemSocket is where the system service listens (the OpenRC script and
// the systemd system unit set api.socket to it).
const SystemSocket = "/run/gentoo-p2pd/api.sock"

// FindSocket returns the first of paths a daemon answers on, in order.
// When none does the error wraps ErrNotRunning and names every path tried
// (and why one that exists could not be used, e.g. permission denied).
func FindSocket(ctx context.Context, paths []string) (string, error) {
	var tried []string
	seen := map[string]bool{}
	for _, p := range paths {
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p)
		if err == nil {
			_ = c.Close() // a probe: nothing was sent
			return p, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
			tried = append(tried, p)
		case errors.Is(err, os.ErrPermission):
			tried = append(tried, p+" (permission denied)")
		default:
			tried = append(tried, fmt.Sprintf("%s (%v)", p, errors.Unwrap(err)))
		}
	}
	return "", notRunning(tried)
}

// notRunning is ErrNotRunning naming the sockets tried.
func notRunning(tried []string) error {
	return fmt.Errorf("%w (no daemon answers on %s; start it with `gentoo-p2pd daemon` or `systemctl --user start gentoo-p2pd`, or `rc-service gentoo-p2pd start` as root)",
		ErrNotRunning, strings.Join(tried, ", "))
}
