package jobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// FakeFetch stands in for transfer.Fetch: it "downloads" a file by its
// SHA-256 from the first listed peer that holds it, honouring Fetch's
// contract: a part file in opts.Dir, opts.Check on its bytes and
// opts.Verify on the complete part file (ErrVerify, file deleted, on
// refusal), a rename to opts.Path or
// Dir/<sha hex>, NotHeld for providers without the file, BadPeers for one
// sending other bytes, ErrNoProviders when none delivered.
type FakeFetch struct {
	mu    sync.Mutex
	held  map[peer.ID]map[[32]byte][]byte
	calls int
	wants [][32]byte
	// fail, when set, is returned by the next calls instead of fetching
	// (after removing the part file, as Fetch does on ErrDiskWrite).
	fail error
	// gate, when set, blocks each call (after started is signalled) until
	// it is closed or the call's context ends.
	gate    chan struct{}
	started chan context.Context
}

// NewFakeFetch makes a fake transfer nobody holds anything in.
func NewFakeFetch() *FakeFetch {
	return &FakeFetch{held: map[peer.ID]map[[32]byte][]byte{}}
}

// Hold makes p serve data.
func (f *FakeFetch) Hold(p peer.ID, data []byte) { f.HoldAs(p, sha256.Sum256(data), data) }

// HoldAs makes p serve data under sha whatever data hashes to: a peer
// sending other bytes than the file asked for.
func (f *FakeFetch) HoldAs(p peer.ID, sha [32]byte, data []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held[p] == nil {
		f.held[p] = map[[32]byte][]byte{}
	}
	f.held[p][sha] = data
}

// HoldLocal makes p serve every file its store has indexed.
func (f *FakeFetch) HoldLocal(t testing.TB, p *Peer) {
	t.Helper()
	lps, err := p.Store.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	for _, lp := range lps {
		data, err := os.ReadFile(lp.Path)
		if err != nil {
			t.Fatal(err)
		}
		f.Hold(p.ID, data)
	}
}

// Calls is how many transfers were asked for.
func (f *FakeFetch) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Wants are the SHA-256s of the files asked for, in order.
func (f *FakeFetch) Wants() [][32]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][32]byte(nil), f.wants...)
}

// SetFail makes the next calls fail with err (nil: fetch again).
func (f *FakeFetch) SetFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// Gate makes each next call send its context to started (when not nil)
// and then wait until gate is closed or the context ends.
func (f *FakeFetch) Gate(gate chan struct{}, started chan context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate, f.started = gate, started
}

// Fetch has transfer.Fetch's signature.
func (f *FakeFetch) Fetch(ctx context.Context, want transfer.Want, providers []peer.AddrInfo, opts transfer.FetchOptions) (transfer.Result, error) {
	f.mu.Lock()
	f.calls++
	f.wants = append(f.wants, want.SHA256)
	gate, started, fail := f.gate, f.started, f.fail
	f.mu.Unlock()
	start := time.Now()
	res := transfer.Result{Size: want.Size, Pieces: pieces.Count(want.Size), PeerPieces: map[peer.ID]int{}}
	defer func() { res.Duration = time.Since(start) }()
	if opts.Dir == "" || want.PieceSize != pieces.Size || want.Size <= 0 {
		return res, fmt.Errorf("%w: dir %q, piece size %d, size %d", transfer.ErrWant, opts.Dir, want.PieceSize, want.Size)
	}
	if started != nil {
		started <- ctx
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	name := hex.EncodeToString(want.SHA256[:])
	part := filepath.Join(opts.Dir, name+".part")
	if fail != nil {
		_ = os.Remove(part)
		return res, fail
	}
	if opts.Path == "" {
		opts.Path = filepath.Join(opts.Dir, name)
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return res, err
	}
	for _, p := range providers {
		f.mu.Lock()
		data, ok := f.held[p.ID][want.SHA256]
		f.mu.Unlock()
		if !ok {
			res.NotHeld = append(res.NotHeld, p.ID)
			continue
		}
		leaves, size, _ := pieces.Layer(bytes.NewReader(data))
		res.BytesFetched += size
		if size != want.Size || pieces.RootOf(leaves) != want.PieceRoot {
			res.BadPeers = append(res.BadPeers, transfer.PeerFault{Peer: p.ID, Kind: transfer.FaultBadLayer, Err: pieces.ErrLayerMismatch})
			continue
		}
		if err := os.WriteFile(part, data, 0o644); err != nil {
			return res, fmt.Errorf("%w: %v", transfer.ErrDiskWrite, err)
		}
		res.PeerPieces[p.ID] = len(leaves)
		res.PiecesFetched = len(leaves)
		res.Leaves = leaves
		if opts.Progress != nil {
			opts.Progress(transfer.Progress{Done: size, Total: size, Peers: 1})
		}
		if sha256.Sum256(data) != want.SHA256 {
			_ = os.Remove(part)
			return res, transfer.ErrHashMismatch
		}
		if opts.Check != nil {
			sum, err := opts.Check(bytes.NewReader(data), size)
			if err != nil {
				_ = os.Remove(part)
				return res, fmt.Errorf("%w: %w", transfer.ErrVerify, err)
			}
			if sum != want.SHA256 {
				_ = os.Remove(part)
				return res, transfer.ErrHashMismatch
			}
		}
		if opts.Verify != nil {
			if err := opts.Verify(part); err != nil {
				_ = os.Remove(part)
				return res, fmt.Errorf("%w: %w", transfer.ErrVerify, err)
			}
		}
		if err := os.Rename(part, opts.Path); err != nil {
			return res, err
		}
		res.Path = opts.Path
		return res, nil
	}
	return res, transfer.ErrNoProviders
}
