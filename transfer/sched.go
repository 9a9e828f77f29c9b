package transfer

import "sync"

// maxCopies is how many providers may fetch one piece at once; above one
// only in the endgame.
const maxCopies = 2

// scheduler is the shared piece queue of one fetch. Workers pull batches of
// consecutive missing pieces from it (work stealing: a fast provider comes
// back sooner and so takes more), and in the endgame duplicate pieces
// still in flight elsewhere.
type scheduler struct {
	mu        sync.Mutex
	done      []bool
	copies    []uint8 // providers currently fetching each piece
	lo        int     // every piece below lo is done
	remaining int
	workers   int           // registered workers, to spread the tail
	changed   chan struct{} // closed and replaced on every state change
	complete  chan struct{} // closed when remaining reaches 0
	// first is a piece to hand out before all others (-1: none): the
	// last one, when FetchOptions.Check reads a trailer before the rest.
	first int
}

func newScheduler(done []bool) *scheduler {
	s := &scheduler{
		done:     done,
		copies:   make([]uint8, len(done)),
		changed:  make(chan struct{}),
		complete: make(chan struct{}),
		first:    -1,
	}
	for _, d := range done {
		if !d {
			s.remaining++
		}
	}
	if s.remaining == 0 {
		close(s.complete)
	}
	return s
}

// notify wakes workers waiting for a change; s.mu must be held.
func (s *scheduler) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// next assigns up to max consecutive pieces to the caller, recording them
// in its provider's inflight set. count == 0 means nothing to do now: wait
// on the returned channel, or stop if it is nil (the file is complete).
func (s *scheduler) next(inflight map[int]struct{}, max int) (first, count int, wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remaining == 0 {
		return 0, 0, nil
	}
	if i := s.first; i >= 0 {
		s.first = -1
		if !s.done[i] && s.copies[i] == 0 {
			s.copies[i]++
			inflight[i] = struct{}{}
			return i, 1, nil
		}
	}
	for s.lo < len(s.done) && s.done[s.lo] {
		s.lo++
	}
	// Normal mode: the lowest missing piece nobody fetches. As the queue
	// drains, batches shrink so the last pieces are spread over all
	// workers instead of queueing behind one slow stream.
	free := func(i int) bool { return !s.done[i] && s.copies[i] == 0 }
	unassigned := 0
	for i := s.lo; i < len(s.done); i++ {
		if free(i) {
			unassigned++
		}
	}
	if w := s.workers; w > 0 {
		max = min(max, (unassigned+w-1)/w)
	}
	max = max0(max)
	first, count = s.run(free, max)
	if count == 0 {
		// Endgame: duplicate a piece another provider is fetching.
		dup := func(i int) bool {
			_, mine := inflight[i]
			return !s.done[i] && s.copies[i] < maxCopies && !mine
		}
		first, count = s.run(dup, max)
	}
	if count == 0 {
		return 0, 0, s.changed
	}
	for i := first; i < first+count; i++ {
		s.copies[i]++
		inflight[i] = struct{}{}
	}
	return first, count, nil
}

func max0(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// addWorkers registers (or, negative, unregisters) workers.
func (s *scheduler) addWorkers(n int) {
	s.mu.Lock()
	s.workers += n
	s.mu.Unlock()
}

// run finds the first piece from lo satisfying ok and extends it to at most
// max consecutive ones.
func (s *scheduler) run(ok func(int) bool, max int) (first, count int) {
	for i := s.lo; i < len(s.done); i++ {
		if !ok(i) {
			continue
		}
		j := i
		for j < len(s.done) && j-i < max && ok(j) {
			j++
		}
		return i, j - i
	}
	return 0, 0
}

// release ends a batch: pieces not done become free for others.
func (s *scheduler) release(inflight map[int]struct{}, first, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := first; i < first+count; i++ {
		s.copies[i]--
		delete(inflight, i)
	}
	s.notify()
}

// markDone records piece i as verified and written; false means another
// copy got there first.
func (s *scheduler) markDone(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[i] {
		return false
	}
	s.done[i] = true
	s.remaining--
	if s.remaining == 0 {
		close(s.complete)
	}
	s.notify()
	return true
}

func (s *scheduler) isDone(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[i]
}

// doneFrom reports whether pieces i..end-1 are all done.
func (s *scheduler) doneFrom(i, end int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; i < end; i++ {
		if !s.done[i] {
			return false
		}
	}
	return true
}

func (s *scheduler) isComplete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remaining == 0
}
