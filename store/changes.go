package store

import (
	"math"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// changeLog remembers, in memory, when what a verdict reads last changed:
// a generation counted up by every write of attestations, endorsements
// or evidence, and per build key the generation of its last such write.
// Readers that keep results derived from those records (the gateway's
// listings) reuse a result while nothing it read has moved since,
// instead of decoding and verifying every vote again.
//
// A write moves the log twice: when the transaction first changes such
// records (begin, before anything is visible) and once it has committed
// or rolled back (end, after). In between, every read of the generation
// returns a new one and the build keys being written read as changed
// now, so nothing derived while a write may become visible is reused
// after it: bbolt makes a commit visible to readers before the
// committing goroutine runs on, and a loaded machine can hold that
// goroutine for milliseconds — long enough, with a log moved only after
// the commit, for a reader to take records it already saw as new for
// unchanged ones (the demo's gateway served an index without the build
// its verdict had just allowed).
//
// It is not persisted: a restart starts from generation 1 with nothing
// known, and everything derived is computed afresh.
type changeLog struct {
	mu  sync.Mutex
	gen uint64
	// floor is the generation at which byKey was last forgotten: a build
	// key not in byKey may have changed at any generation up to floor.
	floor uint64
	byKey map[string]uint64
	// writing counts the transactions between begin and end; writingAll
	// those of them that change every build key, writingKeys the build
	// keys the others change.
	writing, writingAll int
	writingKeys         map[string]int
}

// maxChangeKeys bounds byKey: past it the log forgets every key (raising
// the floor), which costs its readers one full recomputation, so junk
// build keys invented by the thousand cannot grow it for ever.
const maxChangeKeys = 1 << 18

func newChangeLog() *changeLog {
	return &changeLog{gen: 1, floor: 1, byKey: map[string]uint64{}, writingKeys: map[string]int{}}
}

// begin records that a write transaction started changing records.
func (c *changeLog) begin() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing++
	c.gen++
}

// mark records, within a transaction begun, that it changes build keys
// bks ("" = every build key).
func (c *changeLog) mark(bks []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, bk := range bks {
		if bk == "" {
			c.writingAll++
		} else {
			c.writingKeys[bk]++
		}
	}
}

// end records that a begun transaction, which marked bks, committed or
// rolled back (a rollback changes nothing, and moving the log for it
// costs a recomputation only).
func (c *changeLog) end(bks []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing--
	c.gen++
	reset := false
	for _, bk := range bks {
		if bk == "" {
			c.writingAll--
			reset = true
			continue
		}
		if c.writingKeys[bk]--; c.writingKeys[bk] <= 0 {
			delete(c.writingKeys, bk)
		}
	}
	if reset || len(c.byKey)+len(bks) > maxChangeKeys {
		c.byKey = map[string]uint64{}
		c.floor = c.gen
		return
	}
	for _, bk := range bks {
		c.byKey[bk] = c.gen
	}
}

// note records a committed change of build keys bks (all build keys when
// bks holds "") made outside Store.update.
func (c *changeLog) note(bks []string) {
	c.begin()
	c.mark(bks)
	c.end(bks)
}

func (c *changeLog) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing > 0 {
		// A write may become visible at any moment: what the caller
		// derives now must not pass for current after it.
		c.gen++
	}
	return c.gen
}

func (c *changeLog) changed(bk string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writingAll > 0 || c.writingKeys[bk] > 0 {
		return math.MaxUint64
	}
	if g, ok := c.byKey[bk]; ok {
		return g
	}
	return c.floor
}

// txChanges is what one write transaction changes of what the logs
// track; Store.update ends it once the transaction is over.
type txChanges struct {
	votes    bool
	voteKeys []string
	local    bool
}

// finish ends what the transaction began, after its commit or rollback.
func (c *txChanges) finish(s *Store) {
	if c.votes {
		s.votes.end(c.voteKeys)
	}
	if c.local {
		s.local.end(nil)
	}
}

// votesChanged registers, within a write transaction, that the records a
// verdict reads for build keys bks change when tx commits ("" for any
// build key): their persisted vote versions move in tx, and the in-memory
// log before anything is visible and again once tx is over.
func (s *Store) votesChanged(tx *bolt.Tx, bks ...string) error {
	if err := bumpVoteVersions(tx, bks); err != nil {
		return err
	}
	c := s.writing
	if c == nil {
		// Not a transaction of Store.update (none is today): moved
		// after the commit only, as before.
		tx.OnCommit(func() { s.votes.note(bks) })
		return nil
	}
	if !c.votes {
		c.votes = true
		s.votes.begin()
	}
	s.votes.mark(bks)
	c.voteKeys = append(c.voteKeys, bks...)
	return nil
}

// localChanged registers, within a write transaction, that the local
// packages or the content cache change when tx commits.
func (s *Store) localChanged(tx *bolt.Tx) {
	c := s.writing
	if c == nil {
		tx.OnCommit(func() { s.local.note(nil) })
		return
	}
	if !c.local {
		c.local = true
		s.local.begin()
	}
}

// VotesGeneration moves with every write of attestations, endorsements
// and evidence since the store was opened (and with every read while one
// runs): while it stays the same, every verdict computed from the store
// is still right. It only grows.
func (s *Store) VotesGeneration() uint64 { return s.votes.generation() }

// VotesChanged is the generation (VotesGeneration) of the last committed
// write of the attestations, endorsements or evidence of build key bk, or
// an upper bound of it: a verdict on bk computed from the store when
// VotesGeneration was at least this is still right.
func (s *Store) VotesChanged(bk string) uint64 { return s.votes.changed(bk) }

// LocalGeneration counts the committed writes of local packages and of
// the content cache's entries since the store was opened: what says which
// files are held here.
func (s *Store) LocalGeneration() uint64 { return s.local.generation() }
