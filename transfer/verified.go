package transfer

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// errFetchEnded is what a read of verifiedReader returns when the fetch
// ended (incomplete) before the pieces it waits for arrived.
var errFetchEnded = errors.New("transfer: the fetch ended before the piece arrived")

// verifiedReader is the part file as FetchOptions.Check sees it: a read
// returns only bytes of pieces already verified against the piece layer
// and written, and waits for the others. A piece's bytes never change once
// it is done (an endgame duplicate writes the same verified bytes), so
// what Check read stays what the file holds.
type verifiedReader struct {
	f    *fetcher
	stop <-chan struct{} // closed when the download phase is over
	// ended records that a read was cut short by the fetch ending, so
	// that Check's error is not taken for a verdict on the content.
	ended atomic.Bool
	// diskErr records that reading the part file itself failed.
	diskErr atomic.Bool
}

func (r *verifiedReader) ReadAt(p []byte, off int64) (int, error) {
	size := r.f.want.Size
	if off < 0 {
		return 0, fmt.Errorf("transfer: read at negative offset %d", off)
	}
	if off >= size {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), size)
	if err := r.wait(int(off/pieces.Size), int((end-1)/pieces.Size)); err != nil {
		return 0, err
	}
	n, err := r.f.pf.part.ReadAt(p[:end-off], off)
	if err != nil && !errors.Is(err, io.EOF) {
		r.diskErr.Store(true)
	}
	if err == nil && end < off+int64(len(p)) {
		err = io.EOF
	}
	return n, err
}

// wait blocks until pieces lo..hi are all done, or the fetch ended.
func (r *verifiedReader) wait(lo, hi int) error {
	s := r.f.sched
	stopped := false
	for {
		s.mu.Lock()
		ready := true
		for i := lo; i <= hi; i++ {
			if !s.done[i] {
				ready = false
				break
			}
		}
		changed := s.changed
		s.mu.Unlock()
		switch {
		case ready:
			return nil
		case stopped:
			r.ended.Store(true)
			return errFetchEnded
		}
		select {
		case <-changed:
		case <-r.stop:
			stopped = true // look once more: the pieces may have come meanwhile
		}
	}
}

// checkLoop runs FetchOptions.Check over the verified prefix of the part
// file. When Check rejects the content the fetch is stopped at once: no
// provider can make pieces that match the root carry other content.
func (f *fetcher) checkLoop(stop <-chan struct{}) hashResult {
	r := &verifiedReader{f: f, stop: stop}
	sum, err := f.opts.Check(r, f.want.Size)
	if err == nil {
		return hashResult{sum: sum}
	}
	// A read of our own part file that failed is a disk error, not bad
	// content: the next provider would fail the same way.
	if r.ended.Load() || r.diskErr.Load() {
		return hashResult{err: fmt.Errorf("transfer: checking %s: %w", f.pf.partPath, err)}
	}
	if f.cancel != nil {
		f.cancel()
	}
	return hashResult{err: fmt.Errorf("%w: %s: %w", ErrVerify, f.pf.partPath, err), rejected: true}
}
