package store

import (
	"sync"

	bolt "go.etcd.io/bbolt"
)

// changeLog remembers, in memory, when what a verdict reads last changed:
// a generation counted up by every committed write of attestations,
// endorsements or evidence, and per build key the generation of its
// last such write. Readers that keep results derived from those records
// (the gateway's listings) reuse a result while nothing it read has moved
// since, instead of decoding and verifying every vote again.
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
}

// maxChangeKeys bounds byKey: past it the log forgets every key (raising
// the floor), which costs its readers one full recomputation, so junk
// build keys invented by the thousand cannot grow it for ever.
const maxChangeKeys = 1 << 18

func newChangeLog() *changeLog {
	return &changeLog{gen: 1, floor: 1, byKey: map[string]uint64{}}
}

// note records a committed change of build keys bks (all build keys when
// bks holds "").
func (c *changeLog) note(bks []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, bk := range bks {
		if bk == "" || len(c.byKey) >= maxChangeKeys {
			c.byKey = map[string]uint64{}
			c.floor = c.gen
			return
		}
		c.byKey[bk] = c.gen
	}
}

func (c *changeLog) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *changeLog) changed(bk string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g, ok := c.byKey[bk]; ok {
		return g
	}
	return c.floor
}

// votesChanged registers, within a write transaction, that the records a
// verdict reads for build keys bks change when tx commits ("" for any
// build key): their persisted vote versions move in tx, and the in-memory
// log once it commits. A transaction that rolls back changes nothing.
func (s *Store) votesChanged(tx *bolt.Tx, bks ...string) error {
	if err := bumpVoteVersions(tx, bks); err != nil {
		return err
	}
	tx.OnCommit(func() { s.votes.note(bks) })
	return nil
}

// localChanged registers, within a write transaction, that the local
// packages or the content cache change when tx commits.
func (s *Store) localChanged(tx *bolt.Tx) {
	tx.OnCommit(func() { s.local.note(nil) })
}

// VotesGeneration counts the committed writes of attestations,
// endorsements and evidence since the store was opened: while it stays the
// same, every verdict computed from the store is still right. It only
// grows.
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
