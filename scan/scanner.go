package scan

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// Indexer reads one binpkg and returns what the store should record for it
// (digests, keys, piece root …). The daemon supplies it, so scan needs to
// know nothing of identity or trust; tests supply a fake that counts calls.
// The scanner overwrites Path, Size, MTimeNS and Inode with the stat it
// took itself, and fills IndexedAt when the indexer leaves it zero.
type Indexer interface {
	Index(path string) (store.LocalPackage, error)
}

// Changes is what one Sync changed in the store.
type Changes struct {
	// Added are files indexed for the first time.
	Added []store.LocalPackage
	// Replaced are the new records of files whose stat changed (portage
	// rewrote the file); the daemon withdraws what it announced for the
	// old record, which Sync does not return.
	Replaced []store.LocalPackage
	// Removed are the records of files that left PKGDIR (or were replaced
	// by something that no longer indexes).
	Removed []store.LocalPackage
	// Unchanged counts files whose stat matched their record and so were
	// not read at all.
	Unchanged int
	// Errors are the files that could not be indexed, one error each,
	// wrapping the indexer's error and naming the file. They are not
	// fatal, and a file is retried only once its stat changes.
	Errors []error
}

// Empty reports whether the Sync changed nothing and found no new errors.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Replaced) == 0 && len(c.Removed) == 0 && len(c.Errors) == 0
}

// Scanner keeps the store's local package index equal to PKGDIR.
type Scanner struct {
	pkgdir string
	st     *store.Store
	ix     Indexer
	log    *slog.Logger

	// Debounce is how long Watch waits after the last filesystem event
	// before syncing: portage writes a temp file, then renames it, then
	// rewrites Packages, and one Sync should cover the whole burst.
	Debounce time.Duration
	// MaxDelay caps how long a continuous stream of events can postpone a
	// Sync.
	MaxDelay time.Duration
	// PollInterval is how often Watch looks for a PKGDIR that does not
	// exist yet, and how often it rescans if fsnotify is unavailable
	// (inotify watch limit reached).
	PollInterval time.Duration

	mu     sync.Mutex         // one Sync at a time
	failed map[string]statKey // files whose indexing failed, by path, at this stat
}

type statKey struct {
	size, mtimeNS int64
	ino           uint64
}

// New returns a Scanner for pkgdir. Set the exported timing fields before
// calling Watch if the defaults (1 s debounce, 30 s max delay, 10 s poll)
// do not suit.
func New(pkgdir string, st *store.Store, ix Indexer, log *slog.Logger) *Scanner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scanner{
		pkgdir:       pkgdir,
		st:           st,
		ix:           ix,
		log:          log,
		Debounce:     time.Second,
		MaxDelay:     30 * time.Second,
		PollInterval: 10 * time.Second,
		failed:       make(map[string]statKey),
	}
}

// PKGDIR is the directory this scanner covers.
func (s *Scanner) PKGDIR() string { return s.pkgdir }

// Sync compares PKGDIR with the store's local packages by (size, mtime,
// inode): unchanged files are never read; new and changed files are
// indexed and recorded; records of vanished files are deleted. If PKGDIR
// is missing it returns ErrNoPKGDIR and changes nothing (an unmounted disk
// must not withdraw every package).
//
// Changes holds what was recorded even when err != nil: on cancellation or
// a store error half-way, the files recorded (or forgotten) so far are in
// the store and in Changes, together with the error. Callers must act on
// them (announce, withdraw) in both cases, since a later Sync sees those
// files as unchanged and will not return them again.
func (s *Scanner) Sync(ctx context.Context) (Changes, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ch Changes
	files, err := Scan(s.pkgdir)
	if err != nil {
		return ch, err
	}
	recs, err := s.st.ListLocal()
	if err != nil {
		return ch, fmt.Errorf("list local packages: %w", err)
	}
	known := make(map[string]store.LocalPackage, len(recs))
	for _, r := range recs {
		known[r.Path] = r
	}
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return ch, err
		}
		seen[f.Path] = true
		key := statKey{f.Size, f.MTimeNS, f.Inode}
		old, had := known[f.Path]
		if had && (statKey{old.Size, old.MTimeNS, old.Inode}) == key {
			ch.Unchanged++
			continue
		}
		if k, bad := s.failed[f.Path]; bad && k == key {
			continue // already reported; retry once the file changes
		}
		p, err := s.ix.Index(f.Path)
		if err == nil {
			// The file must not have changed while it was read, or the
			// record would pair this stat with other bytes. A change
			// means a write is in progress; its events bring us back.
			size, mt, ino, serr := statFile(f.Path)
			if serr != nil || (statKey{size, mt, ino}) != key {
				s.log.Debug("binpkg changed while indexing; will retry", "path", f.Path)
				if !had {
					delete(seen, f.Path)
				} // else keep the old record until the write settles
				continue
			}
		}
		if err != nil {
			s.failed[f.Path] = key
			err = fmt.Errorf("index %s: %w", f.Path, err)
			s.log.Warn("skipping binpkg that cannot be indexed", "path", f.Path, "err", err)
			ch.Errors = append(ch.Errors, err)
			if had {
				// The old record describes bytes that are gone.
				if _, _, derr := s.st.DeleteLocal(f.Path); derr != nil {
					return ch, fmt.Errorf("forget replaced %s: %w", f.Path, derr)
				}
				ch.Removed = append(ch.Removed, old)
			}
			continue
		}
		delete(s.failed, f.Path)
		p.Path, p.Size, p.MTimeNS, p.Inode = f.Path, f.Size, f.MTimeNS, f.Inode
		if p.IndexedAt.IsZero() {
			p.IndexedAt = time.Now().UTC()
		}
		if err := s.st.PutLocal(p); err != nil {
			return ch, fmt.Errorf("record %s: %w", f.Path, err)
		}
		if had {
			ch.Replaced = append(ch.Replaced, p)
		} else {
			ch.Added = append(ch.Added, p)
		}
	}
	for path := range s.failed {
		if !seen[path] {
			delete(s.failed, path)
		}
	}
	for _, r := range recs {
		if seen[r.Path] {
			continue
		}
		if _, found, err := s.st.DeleteLocal(r.Path); err != nil {
			return ch, fmt.Errorf("forget removed %s: %w", r.Path, err)
		} else if found {
			ch.Removed = append(ch.Removed, r)
		}
	}
	if !ch.Empty() {
		s.log.Info("PKGDIR synced", "added", len(ch.Added), "replaced", len(ch.Replaced),
			"removed", len(ch.Removed), "unchanged", ch.Unchanged, "errors", len(ch.Errors))
	}
	return ch, nil
}
