package portagehook

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// stream is one served-form re-pack being written into the gateway's
// cache while portage reads it: the index promised its size, so the
// response starts at once and follows the file as it grows. Readers share
// the producer's file through ReadAt; the last one to leave cancels the
// producer (the transfer resumes from its part file on the next request).
type stream struct {
	file   *os.File
	cancel context.CancelFunc

	mu      sync.Mutex
	written int64
	changed chan struct{} // closed and replaced at every change
	done    bool
	err     error
	served  Served
	readers int
	closed  bool
}

// streamWriter appends to the stream's file and wakes its readers.
type streamWriter struct{ st *stream }

func (w streamWriter) Write(p []byte) (int, error) {
	n, err := w.st.file.Write(p)
	w.st.mu.Lock()
	w.st.written += int64(n)
	close(w.st.changed)
	w.st.changed = make(chan struct{})
	w.st.mu.Unlock()
	return n, err
}

// state is what a reader may read now, and a channel closed when that
// changes.
func (st *stream) state() (written int64, done bool, changed <-chan struct{}, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.written, st.done, st.changed, st.err
}

func (st *stream) finish(s Served, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.done, st.err, st.served = true, err, s
	close(st.changed)
	st.changed = make(chan struct{})
	st.closeIfIdle()
}

// closeIfIdle closes the file once the producer is done and no reader is
// left. Called under mu.
func (st *stream) closeIfIdle() {
	if st.done && st.readers == 0 && !st.closed {
		st.closed = true
		_ = st.file.Close() // read-only use is over; the producer synced and renamed it
	}
}

// joinStream returns e's stream — starting its producer when none runs —
// registered as read by one more reader; leave unregisters it.
func (g *Gateway) joinStream(e entry) (*stream, func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.streams[e.key]
	if st == nil {
		if err := os.MkdirAll(g.opts.CacheDir, 0o755); err != nil {
			return nil, nil, err
		}
		f, err := os.CreateTemp(g.opts.CacheDir, "."+e.key+".part-*")
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithCancel(g.ctx)
		st = &stream{file: f, cancel: cancel, changed: make(chan struct{})}
		g.streams[e.key] = st
		g.wg.Add(1)
		go g.produce(ctx, st, e)
	}
	st.mu.Lock()
	st.readers++
	st.mu.Unlock()
	return st, func() {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.readers--
		if st.readers == 0 && !st.done {
			st.cancel()
		}
		st.closeIfIdle()
	}, nil
}

// produce materializes e, re-packs it into the stream's file, checks the
// result and moves it into the cache.
func (g *Gateway) produce(ctx context.Context, st *stream, e entry) {
	defer g.wg.Done()
	tmp := st.file.Name()
	start := time.Now()
	s, err := g.produceFile(ctx, st, e)
	if err != nil {
		_ = os.Remove(tmp) // an incomplete re-pack is never served again
		if ctx.Err() == nil {
			g.metrics.repacks.WithLabelValues("refused").Inc()
			g.log.Error("gateway: package unavailable", "path", e.path, "err", err)
		}
	} else {
		g.metrics.repacks.WithLabelValues("ok").Inc()
		g.log.Info("gateway: re-packed", "path", e.path, "size", s.Size, "took", time.Since(start))
	}
	g.mu.Lock()
	if g.streams[e.key] == st {
		delete(g.streams, e.key)
	}
	g.mu.Unlock()
	st.cancel()
	st.finish(s, err)
}

func (g *Gateway) produceFile(ctx context.Context, st *stream, e entry) (Served, error) {
	src, pkg, err := g.cat.Materialize(ctx, e.l)
	if err != nil {
		g.metrics.repacks.WithLabelValues("materialize_error").Inc()
		return Served{}, fmt.Errorf("materialize %s: %w", e.path, err)
	}
	ro := g.repackOptions(e.l)
	ro.Source = pkg
	// Megabyte writes: a syscall and a wake-up per write, not per tar
	// header or zstd block header.
	bw := bufio.NewWriterSize(streamWriter{st}, 1<<20)
	s, err := RepackTo(bw, src, ro)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return Served{}, err
	}
	if s.Size != e.predicted {
		return Served{}, fmt.Errorf("%w: re-pack of %s is %d bytes, the index said %d", ErrRepack, e.path, s.Size, e.predicted)
	}
	if err := st.file.Sync(); err != nil {
		return Served{}, err
	}
	if err := CheckRepacked(st.file.Name(), s, g.opts.Limits); err != nil {
		return Served{}, err
	}
	if err := os.Rename(st.file.Name(), g.file(e.key)); err != nil {
		return Served{}, err
	}
	raw, err := json.Marshal(s)
	if err != nil {
		return Served{}, err
	}
	if err := writeFileAtomic(g.sidecar(e.key), raw, 0o644); err != nil {
		return Served{}, err
	}
	g.forget(e.key)
	g.pruneCache(e.key)
	return s, nil
}

// pruneCache removes the oldest re-packs (by when they were made: their
// sidecar's mtime) until the cache fits CacheBudget, sparing keep.
func (g *Gateway) pruneCache(keep string) {
	if g.opts.CacheBudget <= 0 {
		return
	}
	sidecars, _ := filepath.Glob(filepath.Join(g.opts.CacheDir, "*.json"))
	type made struct {
		key  string
		at   time.Time
		size int64
	}
	var all []made
	var total int64
	for _, sc := range sidecars {
		key := strings.TrimSuffix(filepath.Base(sc), ".json")
		fi, err := os.Stat(sc)
		ff, ferr := os.Stat(g.file(key))
		if err != nil || ferr != nil {
			continue
		}
		all = append(all, made{key, fi.ModTime(), ff.Size()})
		total += ff.Size()
	}
	slices.SortFunc(all, func(a, b made) int { return a.at.Compare(b.at) })
	for _, m := range all {
		if total <= g.opts.CacheBudget {
			return
		}
		if m.key == keep {
			continue
		}
		// The sidecar first: without it the file is never served again.
		if os.Remove(g.sidecar(m.key)) == nil && os.Remove(g.file(m.key)) == nil {
			total -= m.size
		}
		g.forget(m.key) // the index lists it as not re-packed again
	}
}

// waitStream joins e's stream and waits for it to end: the background
// prefetch and Prepare use it so they share the producer portage reads.
func (g *Gateway) waitStream(ctx context.Context, e entry) (Served, error) {
	st, leave, err := g.joinStream(e)
	if err != nil {
		return Served{}, err
	}
	defer leave()
	for {
		_, done, changed, err := st.state()
		if done {
			if err != nil {
				return Served{}, err
			}
			return st.served, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return Served{}, ctx.Err()
		}
	}
}

// streamPackage answers portage's request for a served-form build not in
// the cache yet: the headers (with the size the index promised) go out at
// once, the body follows the re-pack as it is written. Should the re-pack
// fail, the connection is cut short of Content-Length, so portage sees a
// failed download, never a different file.
func (g *Gateway) streamPackage(w http.ResponseWriter, r *http.Request, e entry) {
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Length", strconv.FormatInt(e.predicted, 10))
	w.Header().Set("Last-Modified", e.l.Time.UTC().Truncate(time.Second).Format(http.TimeFormat))
	if r.Method == http.MethodHead {
		return
	}
	st, leave, err := g.joinStream(e)
	if err != nil {
		g.log.Error("gateway: package unavailable", "path", e.path, "err", err)
		http.Error(w, "package unavailable", http.StatusInternalServerError)
		return
	}
	defer leave()
	// A descriptor of its own (its own offset) lets the body go out by
	// sendfile, page cache to socket, instead of through a buffer here.
	// Once the producer renamed the file the name is gone: then ReadAt.
	own, err := os.Open(st.file.Name())
	if err == nil {
		defer own.Close()
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // the headers now: the body may take a while
	var buf []byte
	var off int64
	for off < e.predicted {
		written, done, changed, err := st.state()
		if off < written && own != nil {
			n, werr := io.Copy(w, io.LimitReader(own, written-off))
			off += n
			if werr != nil {
				return // portage went away, or the file failed under us
			}
			if n == 0 {
				panic(http.ErrAbortHandler)
			}
			continue
		}
		if off < written {
			if buf == nil {
				buf = make([]byte, 256<<10)
			}
			n, rerr := st.file.ReadAt(buf[:min(int64(len(buf)), written-off)], off)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return // portage went away
				}
				off += int64(n)
			}
			if rerr != nil && n == 0 {
				panic(http.ErrAbortHandler)
			}
			continue
		}
		if done || err != nil {
			// Short of Content-Length: the client must see a failure.
			panic(http.ErrAbortHandler)
		}
		_ = rc.Flush()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

// partFiles lists leftover stream files (a crash mid re-pack) for removal.
func (g *Gateway) partFiles() []string {
	m, _ := filepath.Glob(filepath.Join(g.opts.CacheDir, ".*.part-*"))
	return m
}
