package scan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// errRestart tells Watch's outer loop that PKGDIR went away and it should
// go back to waiting for it.
var errRestart = errors.New("PKGDIR vanished")

// Watch keeps the store in step with PKGDIR until ctx is done, calling
// onChange (from Watch's goroutine) after every Sync that changed
// something. It waits, polling every PollInterval, for a PKGDIR that does
// not exist yet; then it watches PKGDIR and its category and package
// directories with fsnotify (adding new ones as portage creates them),
// runs one Sync, and after that one Sync per burst of events (Debounce,
// capped by MaxDelay). If fsnotify cannot watch (inotify limits), it falls
// back to a Sync every PollInterval. Cancellation is not an error: Watch
// returns nil when ctx is done.
func (s *Scanner) Watch(ctx context.Context, onChange func(Changes)) error {
	for {
		root, err := s.waitForPKGDIR(ctx)
		if err != nil {
			return nil // ctx done
		}
		err = s.watchRoot(ctx, root, onChange)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errRestart) {
			return err
		}
		s.log.Warn("PKGDIR disappeared; waiting for it to come back", "pkgdir", s.pkgdir)
	}
}

func (s *Scanner) waitForPKGDIR(ctx context.Context) (string, error) {
	t := time.NewTicker(s.PollInterval)
	defer t.Stop()
	warned := false
	for {
		_, root, err := resolve(s.pkgdir)
		if err == nil {
			return root, nil
		}
		if !warned {
			s.log.Warn("PKGDIR not usable yet; polling for it", "pkgdir", s.pkgdir, "err", err, "interval", s.PollInterval)
			warned = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// watchRoot watches one incarnation of PKGDIR. It returns errRestart when
// PKGDIR disappears, nil when ctx is done.
func (s *Scanner) watchRoot(ctx context.Context, root string, onChange func(Changes)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("cannot watch PKGDIR; rescanning periodically instead", "err", err, "interval", s.PollInterval)
		return s.pollLoop(ctx, onChange)
	}
	defer w.Close()
	if err := s.addTree(w, root, root); err != nil {
		if _, _, rerr := resolve(s.pkgdir); rerr != nil {
			return errRestart
		}
		s.log.Warn("cannot watch PKGDIR; rescanning periodically instead", "err", err, "interval", s.PollInterval)
		return s.pollLoop(ctx, onChange)
	}
	// The first Sync runs after the watches exist, so nothing written in
	// between is missed: it is either in this scan or in an event.
	if err := s.syncAndReport(ctx, onChange); err != nil {
		return err
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		pending    bool
		burstStart time.Time
	)
	schedule := func() {
		now := time.Now()
		if !pending {
			pending, burstStart = true, now
		}
		delay := s.Debounce
		if limit := burstStart.Add(s.MaxDelay); now.Add(delay).After(limit) {
			delay = max(limit.Sub(now), 0)
		}
		timer.Reset(delay)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if ev.Name == root && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return errRestart
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					if err := s.addTree(w, root, ev.Name); err != nil {
						s.log.Warn("cannot watch new PKGDIR subdirectory", "path", ev.Name, "err", err)
					}
				}
			}
			schedule()
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow lost events; a full Sync recovers from it.
			s.log.Warn("PKGDIR watch error; resyncing", "err", err)
			schedule()
		case <-timer.C:
			pending = false
			if err := s.syncAndReport(ctx, onChange); err != nil {
				return err
			}
		}
	}
}

// addTree watches dir and the directories below it that a layout can hold
// packages in (CAT/ and CAT/PN/), skipping hidden ones.
func (s *Scanner) addTree(w *fsnotify.Watcher, root, dir string) error {
	return filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && path != root {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if path != root {
			if strings.HasPrefix(d.Name(), ".") || strings.Count(filepath.ToSlash(rel), "/") >= 2 {
				return filepath.SkipDir
			}
		}
		if err := w.Add(path); err != nil {
			if errors.Is(err, os.ErrNotExist) && path != root {
				return filepath.SkipDir
			}
			return err
		}
		if path != root && strings.Count(filepath.ToSlash(rel), "/") == 1 {
			return filepath.SkipDir // CAT/PN: nothing deeper is watched
		}
		return nil
	})
}

// syncAndReport runs one Sync and reports its changes a batch at a time
// (SyncEach), even when Sync also
// failed (cancelled or a store error half-way): what it returns was
// already recorded, and a recorded file is unchanged to every later Sync,
// so a report dropped here would never be made. It returns errRestart if
// PKGDIR is gone, nil otherwise: other errors are logged, never fatal to
// watching.
func (s *Scanner) syncAndReport(ctx context.Context, onChange func(Changes)) error {
	err := s.SyncEach(ctx, func(ch Changes) {
		if !ch.Empty() && onChange != nil {
			onChange(ch)
		}
	})
	switch {
	case errors.Is(err, ErrNoPKGDIR):
		return errRestart
	case ctx.Err() != nil:
		return nil
	case err != nil:
		s.log.Warn("PKGDIR sync failed", "pkgdir", s.pkgdir, "err", err)
	}
	return nil
}

// pollLoop is the fallback without fsnotify: a Sync every PollInterval.
func (s *Scanner) pollLoop(ctx context.Context, onChange func(Changes)) error {
	t := time.NewTicker(s.PollInterval)
	defer t.Stop()
	for {
		if err := s.syncAndReport(ctx, onChange); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
