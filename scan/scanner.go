package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// Indexer reads one binpkg and returns what the store should record for it
// (digests, keys, piece root …). The daemon supplies it, so scan needs to
// know nothing of identity or trust; tests supply a fake that counts calls.
// Index is called from several goroutines at once (one per core).
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
	// Extra are further directories indexed like PKGDIR (the builder's
	// PKGDIR): every Sync reads them too, but Watch follows PKGDIR only,
	// so whoever writes there asks for a Sync. One that does not exist is
	// skipped and its records kept, as a missing PKGDIR keeps its own.
	Extra []string

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
//
// Sync holds every record it returns; SyncEach does not.
func (s *Scanner) Sync(ctx context.Context) (Changes, error) {
	var all Changes
	err := s.SyncEach(ctx, func(ch Changes) {
		all.Added = append(all.Added, ch.Added...)
		all.Replaced = append(all.Replaced, ch.Replaced...)
		all.Removed = append(all.Removed, ch.Removed...)
		all.Unchanged += ch.Unchanged
		all.Errors = append(all.Errors, ch.Errors...)
	})
	return all, err
}

// SyncBatch is how many new or changed files SyncEach indexes, records
// (in one store transaction) and hands to its caller at a time.
const SyncBatch = 64

// SyncEach is Sync that hands what it recorded to apply a batch at a time
// (at most SyncBatch files indexed, then the removals), so that memory
// stays bounded whatever the size of PKGDIR: a first start on ten
// thousand builds holds two batches of records (the one being indexed
// and the one being recorded and applied), not ten thousand. apply is
// called, from the calling goroutine, for every batch recorded, also when
// SyncEach then returns an error; Changes of the calls add up to what Sync
// returns. Files are indexed concurrently (up to GOMAXPROCS at once), the
// next batch's while the one before is recorded and applied, so the
// Indexer must allow concurrent calls.
func (s *Scanner) SyncEach(ctx context.Context, apply func(Changes)) (rerr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := Scan(s.pkgdir)
	var absent []string
	if errors.Is(err, ErrNoPKGDIR) && len(s.Extra) > 0 {
		// The Extra directories are still read (a machine that only
		// donates builds may have no PKGDIR); PKGDIR's records stay, and
		// the caller learns it is missing once the rest is done.
		abs, aerr := filepath.Abs(s.pkgdir)
		if aerr != nil {
			return aerr
		}
		absent = append(absent, abs)
		missing := err
		defer func() {
			if rerr == nil {
				rerr = missing
			}
		}()
	} else if err != nil {
		return err
	}
	files, more, xerr := s.scanExtra(files)
	if xerr != nil {
		return xerr
	}
	absent = append(absent, more...)
	known, err := s.st.LocalStats()
	if err != nil {
		return fmt.Errorf("list local packages: %w", err)
	}
	seen := make(map[string]bool, len(files))
	var ch, total Changes // total counts only: its slices stay empty
	var added, replaced, removed, errs int
	report := func(c Changes) {
		added, replaced, removed, errs = added+len(c.Added), replaced+len(c.Replaced), removed+len(c.Removed), errs+len(c.Errors)
		total.Unchanged += c.Unchanged
		apply(c)
	}
	defer func() {
		if added+replaced+removed+errs > 0 {
			s.log.Info("PKGDIR synced", "added", added, "replaced", replaced,
				"removed", removed, "unchanged", total.Unchanged, "errors", errs)
		}
	}()
	// A batch is indexed while the one before it is recorded and handed
	// to apply: the store's synced commit, and apply (which may wait for
	// the caller's work on the batch before), would otherwise leave the
	// cores idle.
	var (
		todo    []FileInfo
		pending *indexing
		// Two batches in flight share the cores: at most GOMAXPROCS
		// files are read at once, each with its buffers.
		slots = make(chan struct{}, runtime.GOMAXPROCS(0))
	)
	record := func() error {
		var err error
		if pending != nil {
			err = s.recordBatch(pending, known, seen, &ch)
			pending = nil
		}
		if !ch.Empty() || ch.Unchanged > 0 {
			report(ch)
		}
		ch = Changes{}
		return err
	}
	// flush starts indexing todo and records the batch before it.
	flush := func() error {
		var started *indexing
		if len(todo) > 0 {
			started = s.startIndex(ctx, todo, slots)
			todo = nil // the batch being indexed keeps its files
		}
		if err := record(); err != nil {
			if started != nil {
				started.wg.Wait() // no indexing goroutine outlives SyncEach
			}
			return err
		}
		pending = started
		return nil
	}
	drain := func() error {
		if err := flush(); err != nil {
			return err
		}
		return record()
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			if ferr := drain(); ferr != nil {
				return ferr
			}
			return err
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
		todo = append(todo, f)
		if len(todo) == SyncBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := drain(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // files left unindexed must not read as removed either
	}
	for path := range s.failed {
		if !seen[path] {
			delete(s.failed, path)
		}
	}
	var gone []string
	for path := range known {
		if !seen[path] && !under(absent, path) {
			gone = append(gone, path)
		}
	}
	sort.Strings(gone)
	var rm Changes
	for _, path := range gone {
		if r, found, err := s.st.DeleteLocal(path); err != nil {
			if len(rm.Removed) > 0 {
				report(rm)
			}
			return fmt.Errorf("forget removed %s: %w", path, err)
		} else if found {
			rm.Removed = append(rm.Removed, r)
		}
		if len(rm.Removed) == SyncBatch {
			report(rm)
			rm = Changes{}
		}
	}
	if len(rm.Removed) > 0 {
		report(rm)
	}
	return nil
}

// scanExtra adds the binpkgs of the Extra directories to files (sorted by
// path, each once) and returns the directories that do not exist.
func (s *Scanner) scanExtra(files []FileInfo) ([]FileInfo, []string, error) {
	if len(s.Extra) == 0 {
		return files, nil, nil
	}
	var absent []string
	for _, d := range s.Extra {
		more, err := Scan(d)
		if errors.Is(err, ErrNoPKGDIR) {
			abs, aerr := filepath.Abs(d)
			if aerr != nil {
				return nil, nil, aerr
			}
			absent = append(absent, abs)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		files = append(files, more...)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	files = slices.CompactFunc(files, func(a, b FileInfo) bool { return a.Path == b.Path })
	return files, absent, nil
}

// under reports whether path is inside one of dirs.
func under(dirs []string, path string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// indexed is one file's indexing outcome.
type indexed struct {
	p    store.LocalPackage
	err  error
	done bool // false: left for the next Sync (cancelled)
}

// indexing is one batch of files being indexed in the background.
type indexing struct {
	files []FileInfo
	out   []indexed
	wg    sync.WaitGroup
}

// startIndex starts indexing files concurrently, each file holding one
// of slots while it is read (so batches indexed at the same time share
// them); recordBatch waits for them. Files not started when ctx ends are
// left for the next Sync.
func (s *Scanner) startIndex(ctx context.Context, files []FileInfo, slots chan struct{}) *indexing {
	b := &indexing{files: files, out: make([]indexed, len(files))}
	next := make(chan int)
	for range min(cap(slots), len(files)) {
		b.wg.Go(func() {
			for i := range next {
				slots <- struct{}{}
				if ctx.Err() == nil {
					b.out[i].p, b.out[i].err = s.ix.Index(files[i].Path)
					b.out[i].done = true
				}
				<-slots
			}
		})
	}
	b.wg.Go(func() {
		defer close(next)
		for i := range files {
			if ctx.Err() != nil {
				return // the rest is left for the next Sync
			}
			next <- i
		}
	})
	return b
}

// recordBatch waits for a batch's indexing, then records it in one
// store transaction and adds it to ch. seen loses a new file that changed
// while it was read (its write is in progress; its events bring it back).
func (s *Scanner) recordBatch(b *indexing, known map[string]store.LocalStat, seen map[string]bool, ch *Changes) error {
	b.wg.Wait()
	files, out := b.files, b.out
	var put, added, replaced []store.LocalPackage
	for i, r := range out {
		if !r.done {
			continue
		}
		f := files[i]
		key := statKey{f.Size, f.MTimeNS, f.Inode}
		_, had := known[f.Path]
		if r.err == nil {
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
		if r.err != nil {
			s.failed[f.Path] = key
			err := fmt.Errorf("index %s: %w", f.Path, r.err)
			s.log.Warn("skipping binpkg that cannot be indexed", "path", f.Path, "err", err)
			ch.Errors = append(ch.Errors, err)
			if had {
				// The old record describes bytes that are gone.
				old, found, derr := s.st.DeleteLocal(f.Path)
				if derr != nil {
					return fmt.Errorf("forget replaced %s: %w", f.Path, derr)
				}
				if found {
					ch.Removed = append(ch.Removed, old)
				}
				delete(known, f.Path)
			}
			continue
		}
		delete(s.failed, f.Path)
		p := r.p
		p.Path, p.Size, p.MTimeNS, p.Inode = f.Path, f.Size, f.MTimeNS, f.Inode
		if p.IndexedAt.IsZero() {
			p.IndexedAt = time.Now().UTC()
		}
		put = append(put, p)
		if had {
			replaced = append(replaced, p)
		} else {
			added = append(added, p)
		}
	}
	if len(put) == 0 {
		return nil
	}
	if err := s.st.PutLocals(put); err != nil {
		return fmt.Errorf("record %d binpkgs (%s …): %w", len(put), put[0].Path, err)
	}
	for _, p := range put {
		known[p.Path] = store.LocalStat{Size: p.Size, MTimeNS: p.MTimeNS, Inode: p.Inode}
	}
	// Stored: the records handed on are those a read returns.
	for i := range added {
		added[i].Leaves = nil
	}
	for i := range replaced {
		replaced[i].Leaves = nil
	}
	ch.Added = append(ch.Added, added...)
	ch.Replaced = append(ch.Replaced, replaced...)
	return nil
}
