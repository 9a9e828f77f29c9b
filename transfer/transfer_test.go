package transfer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// checkComplete asserts the fetched file is at res.Path with the right
// content and that no partial files are left.
func checkComplete(t *testing.T, dir string, res Result, tf *testFile) {
	t.Helper()
	got, err := os.ReadFile(res.Path)
	if err != nil {
		t.Fatalf("reading result: %v", err)
	}
	if sha256.Sum256(got) != tf.want.SHA256 {
		t.Fatalf("result %s has the wrong SHA-256", res.Path)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.part"))
	bits, _ := filepath.Glob(filepath.Join(dir, "*.bits"))
	if len(left)+len(bits) != 0 {
		t.Fatalf("partial files left behind: %v %v", left, bits)
	}
}

func TestFetchSingleProvider(t *testing.T) {
	sizes := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"one piece", pieces.Size},
		{"short last piece", 5*pieces.Size + 1234},
	}
	p := newProvider(t, newMemSource(), ServerOptions{Enabled: true})
	h := newHost(t)
	for i, tt := range sizes {
		t.Run(tt.name, func(t *testing.T) {
			tf := makeFile(t, tt.size, uint64(i))
			p.src.mu.Lock()
			p.src.files[tf.want.SHA256] = tf
			p.src.mu.Unlock()
			dir := t.TempDir()
			var lastProgress atomic.Int64
			res, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{
				Dir:      dir,
				Progress: func(pr Progress) { lastProgress.Store(pr.Done) },
			})
			if err != nil {
				t.Fatal(err)
			}
			checkComplete(t, dir, res, tf)
			if res.PiecesFetched != pieces.Count(tf.want.Size) || res.PiecesReused != 0 {
				t.Fatalf("fetched %d reused %d, want %d and 0", res.PiecesFetched, res.PiecesReused, pieces.Count(tf.want.Size))
			}
			if pieces.RootOf(res.Leaves) != tf.want.PieceRoot {
				t.Fatalf("Result.Leaves is not the verified layer")
			}
			if tt.size > 0 && lastProgress.Load() != tf.want.Size {
				t.Fatalf("last progress %d, want %d", lastProgress.Load(), tf.want.Size)
			}
		})
	}
}

// TestFetchCorruptProvider: one of four providers flips a byte in every
// piece it serves; it is dropped as a bad peer and the file completes.
func TestFetchCorruptProvider(t *testing.T) {
	tf := makeFile(t, 64*pieces.Size+77, 1)
	dropped := newGate()
	bad := newMemSource(tf)
	// Flip one byte in every piece the read touches.
	bad.mutate = func(p []byte, off int64) {
		for o := off; o < off+int64(len(p)); o = (o/pieces.Size + 1) * pieces.Size {
			p[o-off] ^= 0x40
		}
	}
	provs := []*provider{newProvider(t, bad, ServerOptions{Enabled: true})}
	for range 3 {
		honest := newMemSource(tf)
		// Honest providers hold back until the corrupt one was dropped,
		// so it is certain to be exercised.
		honest.beforeRead = func(int64, int) { dropped.wait() }
		provs = append(provs, newProvider(t, honest, ServerOptions{Enabled: true}))
	}
	var infos []peer.AddrInfo
	for _, p := range provs {
		infos = append(infos, addrInfo(p.h))
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, infos, FetchOptions{Dir: dir, BatchPieces: 2, Metrics: m, Logger: dropLogger(dropped)})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	f, ok := faultOf(res, provs[0].h.ID())
	if !ok || f.Kind != FaultBadPiece || !errors.Is(f.Err, pieces.ErrBadPiece) {
		t.Fatalf("corrupt provider not reported as bad piece: %+v", res.BadPeers)
	}
	if len(res.BadPeers) != 1 {
		t.Fatalf("honest providers reported: %+v", res.BadPeers)
	}
	if res.PeerPieces[provs[0].h.ID()] != 0 {
		t.Fatalf("corrupt provider credited with %d pieces", res.PeerPieces[provs[0].h.ID()])
	}
	if got := gathered(t, reg, "gentoo_p2pd_transfer_peer_faults_total", string(FaultBadPiece)); got != 1 {
		t.Fatalf("bad_piece metric %v, want 1", got)
	}
	if got := gathered(t, reg, "gentoo_p2pd_transfer_fetched_bytes_total", ""); got < float64(tf.want.Size) {
		t.Fatalf("fetched bytes metric %v < file size", got)
	}
}

// TestFetchProviderKilled: a provider's host is closed after it served a
// few reads; the fetch completes from the others.
func TestFetchProviderKilled(t *testing.T) {
	tf := makeFile(t, 48*pieces.Size+5, 2)
	dropped := newGate()
	var reads atomic.Int32
	reachedN := newGate()
	victimSrc := newMemSource(tf)
	victimSrc.beforeRead = func(int64, int) {
		if reads.Add(1) == 3 {
			reachedN.open()
		}
	}
	victim := newProvider(t, victimSrc, ServerOptions{Enabled: true})
	var infos []peer.AddrInfo
	infos = append(infos, addrInfo(victim.h))
	others := []*provider{}
	for range 2 {
		src := newMemSource(tf)
		src.beforeRead = func(int64, int) { dropped.wait() }
		p := newProvider(t, src, ServerOptions{Enabled: true})
		others = append(others, p)
		infos = append(infos, addrInfo(p.h))
	}
	go func() {
		reachedN.wait()
		victim.h.Close()
	}()
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, infos, FetchOptions{Dir: dir, BatchPieces: 2, Logger: dropLogger(dropped)})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	f, ok := faultOf(res, victim.h.ID())
	if !ok || f.Kind != FaultConnection {
		t.Fatalf("killed provider not reported as a connection fault: %+v", res.BadPeers)
	}
	if res.PeerPieces[others[0].h.ID()]+res.PeerPieces[others[1].h.ID()] == 0 {
		t.Fatalf("survivors contributed nothing: %v", res.PeerPieces)
	}
}

// TestFetchResume cancels a fetch after some pieces (as a kill would stop
// it), then fetches again: marked pieces are reused and never requested.
func TestFetchResume(t *testing.T) {
	tf := makeFile(t, 40*pieces.Size+999, 3)
	src1 := newMemSource(tf)
	p1 := newProvider(t, src1, ServerOptions{Enabled: true})
	dir := t.TempDir()
	h := newHost(t)

	// Both fetches run a Check: cancelling the first is no verdict on the
	// content, and the second's Check reads the reused pieces too.
	const k = 10
	ctx, cancel := context.WithCancel(testCtx(t))
	var verified atomic.Int32
	res1, err := Fetch(ctx, h, tf.want, []peer.AddrInfo{addrInfo(p1.h)}, FetchOptions{
		Dir: dir, BatchPieces: 1, MaxInFlightPerPeer: 2, Check: streamCheck(&bytes.Buffer{}),
		Progress: func(Progress) {
			if verified.Add(1) == k {
				cancel()
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("first fetch: %v, want context.Canceled", err)
	}
	if res1.PiecesFetched < k || res1.Path != "" {
		t.Fatalf("first fetch: %d pieces, path %q", res1.PiecesFetched, res1.Path)
	}
	partPath, bitsPath := partPaths(dir, tf.want.SHA256)
	if _, err := os.Stat(partPath); err != nil {
		t.Fatalf("part file missing after cancel: %v", err)
	}
	bits, err := os.ReadFile(bitsPath)
	if err != nil {
		t.Fatal(err)
	}
	var marked []int
	for i := range tf.leaves {
		if bits[bitsHeaderLen+i/8]&(1<<(i%8)) != 0 {
			marked = append(marked, i)
		}
	}
	if len(marked) < k {
		t.Fatalf("%d pieces marked after cancel, want >= %d", len(marked), k)
	}

	src2 := newMemSource(tf)
	p2 := newProvider(t, src2, ServerOptions{Enabled: true})
	var saw bytes.Buffer
	res2, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p2.h)}, FetchOptions{Dir: dir, Check: streamCheck(&saw)})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res2, tf)
	if !bytes.Equal(saw.Bytes(), tf.data) {
		t.Fatal("the resumed fetch's Check did not read the file")
	}
	if res2.PiecesReused != len(marked) || res2.PiecesReused+res2.PiecesFetched != len(tf.leaves) {
		t.Fatalf("reused %d fetched %d; %d marked of %d", res2.PiecesReused, res2.PiecesFetched, len(marked), len(tf.leaves))
	}
	for _, i := range marked {
		if b := src2.bytesOfPiece(i); b != 0 {
			t.Fatalf("verified piece %d downloaded again (%d bytes)", i, b)
		}
	}
}

// TestFetchResumeRejectsDamagedPiece: a marked piece whose bytes on disk
// were damaged is re-verified, found bad and fetched again.
func TestFetchResumeRejectsDamagedPiece(t *testing.T) {
	tf := makeFile(t, 6*pieces.Size, 4)
	dir := t.TempDir()
	partPath, bitsPath := partPaths(dir, tf.want.SHA256)
	damaged := append([]byte(nil), tf.data...)
	damaged[2*pieces.Size+10] ^= 1
	if err := os.WriteFile(partPath, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	field := []byte{0x3f} // all six pieces marked
	if err := os.WriteFile(bitsPath, append(bitsHeader(tf.want), field...), 0o644); err != nil {
		t.Fatal(err)
	}
	src := newMemSource(tf)
	p := newProvider(t, src, ServerOptions{Enabled: true})
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	if res.PiecesReused != 5 || res.PiecesFetched != 1 || src.bytesOfPiece(2) != pieces.Size {
		t.Fatalf("reused %d fetched %d, piece 2 served %d bytes", res.PiecesReused, res.PiecesFetched, src.bytesOfPiece(2))
	}
}

// TestFetchIgnoresForeignBitfield: a bitfield for another root is not
// trusted.
func TestFetchIgnoresForeignBitfield(t *testing.T) {
	tf := makeFile(t, 3*pieces.Size, 5)
	dir := t.TempDir()
	partPath, bitsPath := partPaths(dir, tf.want.SHA256)
	if err := os.WriteFile(partPath, make([]byte, len(tf.data)), 0o644); err != nil {
		t.Fatal(err)
	}
	other := tf.want
	other.PieceRoot[0] ^= 1
	if err := os.WriteFile(bitsPath, append(bitsHeader(other), 0x07), 0o644); err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	if res.PiecesReused != 0 {
		t.Fatalf("reused %d pieces from a foreign bitfield", res.PiecesReused)
	}
}

func TestConsumeModeServesNothing(t *testing.T) {
	tf := makeFile(t, 2*pieces.Size, 6)
	src := newMemSource(tf)
	p := newProvider(t, src, ServerOptions{}) // zero value: consume mode
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if !errors.Is(err, ErrNoProviders) {
		t.Fatalf("got %v, want ErrNoProviders", err)
	}
	f, ok := faultOf(res, p.h.ID())
	var re *RemoteError
	if !ok || f.Kind != FaultUnavailable || !errors.As(f.Err, &re) || re.Code != statusDisabled {
		t.Fatalf("consume-mode provider fault: %+v", res.BadPeers)
	}
	src.mu.Lock()
	opens := src.opens
	src.mu.Unlock()
	if opens != 0 {
		t.Fatalf("consume-mode server opened %d files", opens)
	}
	// Switching serving on at run time takes effect for the next fetch.
	p.srv.SetEnabled(true)
	res, err = Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
}

func TestNotFoundAndBadLayer(t *testing.T) {
	tf := makeFile(t, 9*pieces.Size+3, 7)
	other := makeFile(t, 9*pieces.Size+3, 8)
	tests := []struct {
		name string
		src  func() *memSource
		kind FaultKind
	}{
		{"not found", func() *memSource { return newMemSource(other) }, ""}, // not a fault: see NotHeld
		{"layer of other content", func() *memSource {
			s := newMemSource(tf)
			s.leavesFor = func(*testFile) [][32]byte { return other.leaves }
			return s
		}, FaultBadLayer},
		{"layer missing a leaf", func() *memSource {
			s := newMemSource(tf)
			s.leavesFor = func(f *testFile) [][32]byte { return f.leaves[:len(f.leaves)-1] }
			return s
		}, FaultBadLayer},
		{"layer with a leaf too many", func() *memSource {
			s := newMemSource(tf)
			s.leavesFor = func(f *testFile) [][32]byte { return append(append([][32]byte(nil), f.leaves...), f.leaves[0]) }
			return s
		}, FaultBadLayer},
	}
	h := newHost(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			badSrc := tt.src()
			bad := newProvider(t, badSrc, ServerOptions{Enabled: true})
			dropped := newGate()
			honestSrc := newMemSource(tf)
			honestSrc.beforeRead = func(int64, int) { dropped.wait() }
			honest := newProvider(t, honestSrc, ServerOptions{Enabled: true})
			dir := t.TempDir()
			res, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(bad.h), addrInfo(honest.h)}, FetchOptions{Dir: dir, Logger: dropLogger(dropped)})
			if err != nil {
				t.Fatal(err)
			}
			checkComplete(t, dir, res, tf)
			f, ok := faultOf(res, bad.h.ID())
			if tt.kind == "" {
				if ok || len(res.NotHeld) != 1 || res.NotHeld[0] != bad.h.ID() {
					t.Fatalf("provider without the file: faults %+v, not held %v; want no fault and listed as not holding it", res.BadPeers, res.NotHeld)
				}
			} else if !ok || f.Kind != tt.kind {
				t.Fatalf("bad provider fault %+v, want %s", res.BadPeers, tt.kind)
			}
			if badSrc.readCount() != 0 {
				t.Fatalf("pieces were requested from a provider with a bad layer")
			}
		})
	}
}

// TestFetchStalledProvider: a provider that stops sending is dropped after
// StallTimeout; being the only one, the fetch fails and keeps its partial
// file for a later resume.
func TestFetchStalledProvider(t *testing.T) {
	tf := makeFile(t, 12*pieces.Size, 9)
	release := newGate()
	var reads atomic.Int32
	stallSrc := newMemSource(tf)
	stallSrc.beforeRead = func(int64, int) {
		if reads.Add(1) > 2 {
			release.wait()
		}
	}
	staller := newProvider(t, stallSrc, ServerOptions{Enabled: true})
	t.Cleanup(release.open) // runs before the server's Close
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(staller.h)},
		FetchOptions{Dir: dir, BatchPieces: 1, MaxInFlightPerPeer: 1, StallTimeout: time.Second})
	if !errors.Is(err, ErrNoProviders) {
		t.Fatalf("got %v, want ErrNoProviders", err)
	}
	if f, ok := faultOf(res, staller.h.ID()); !ok || f.Kind != FaultStall {
		t.Fatalf("staller fault %+v, want %s", res.BadPeers, FaultStall)
	}
	// Two pieces are served before the provider stalls; on a loaded
	// machine the timeout may strike even earlier, never later.
	if res.PiecesFetched > 2 {
		t.Fatalf("fetched %d pieces from a provider that served 2", res.PiecesFetched)
	}
	if _, err := os.Stat(filepath.Join(dir, hexName(tf)+".part")); err != nil {
		t.Fatalf("partial file not kept: %v", err)
	}
}

func hexName(tf *testFile) string { return hex.EncodeToString(tf.want.SHA256[:]) }

// TestRateCaps checks the caps by token accounting: a token bucket can
// never have released more than burst + rate × elapsed bytes, whatever the
// scheduling. (Wall time only bounds from above; nothing asserts speed.)
func TestRateCaps(t *testing.T) {
	const rateCap = 4 << 20
	tests := []struct {
		name string
		opts ServerOptions
	}{
		{"per peer", ServerOptions{Enabled: true, PerPeerRate: rateCap}},
		{"global", ServerOptions{Enabled: true, GlobalRate: rateCap}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tf := makeFile(t, 8*pieces.Size, uint64(20+i))
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			opts := tt.opts
			opts.Metrics = m
			p := newProvider(t, newMemSource(tf), opts)
			dir := t.TempDir()
			start := time.Now()
			res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			checkComplete(t, dir, res, tf)
			sent := int64(gathered(t, reg, "gentoo_p2pd_transfer_served_bytes_total", ""))
			if sent < tf.want.Size {
				t.Fatalf("served-bytes metric %d < file size %d", sent, tf.want.Size)
			}
			allowed := int64(burstFor(rateCap)) + int64(rateCap*elapsed.Seconds())
			t.Logf("cap %d B/s: sent %d bytes in %v (%.0f B/s)", rateCap, sent, elapsed, float64(sent)/elapsed.Seconds())
			if sent > allowed {
				t.Fatalf("sent %d bytes in %v, bucket allows at most %d", sent, elapsed, allowed)
			}
		})
	}
}

// TestDownloadLimit checks FetchOptions.DownloadLimit over all providers
// and over fetches sharing it: two unlimited providers serve two files,
// fetched at once under one Limit, and together the fetches cannot have
// received more than burst + rate × elapsed bytes. (Only a lower bound on
// wall time is asserted; nothing asserts speed.)
func TestDownloadLimit(t *testing.T) {
	const rateCap = 2 << 20
	files := []*testFile{makeFile(t, 4*pieces.Size, 41), makeFile(t, 4*pieces.Size, 42)}
	a := newProvider(t, newMemSource(files...), ServerOptions{Enabled: true})
	b := newProvider(t, newMemSource(files...), ServerOptions{Enabled: true})
	limit := NewLimit(rateCap)
	h := newHost(t)
	var total int64
	errs := make(chan error, len(files))
	start := time.Now()
	for _, tf := range files {
		total += tf.want.Size
		dir := t.TempDir()
		go func() {
			res, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(a.h), addrInfo(b.h)},
				FetchOptions{Dir: dir, DownloadLimit: limit})
			if err == nil && res.BytesFetched < tf.want.Size {
				err = fmt.Errorf("fetched %d piece bytes of %d", res.BytesFetched, tf.want.Size)
			}
			errs <- err
		}()
	}
	for range files {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	// Every byte read off a stream took tokens, the piece bytes among them.
	minElapsed := time.Duration(float64(total-int64(burstFor(rateCap))) / rateCap * float64(time.Second))
	t.Logf("cap %d B/s: fetched %d bytes in %v (%.0f B/s)", rateCap, total, elapsed, float64(total)/elapsed.Seconds())
	if elapsed < minElapsed {
		t.Fatalf("fetched %d bytes in %v under a %d B/s cap: at least %v expected", total, elapsed, rateCap, minElapsed)
	}
	if NewLimit(0) != nil {
		t.Fatal("NewLimit(0) is not unlimited (nil)")
	}
}

// TestEndgameDuplicatesStuckPieces: one provider takes a batch and then
// sends nothing (its stall timeout is far away); the other provider
// duplicates those pieces in the endgame and the fetch completes without
// waiting for the stuck one.
func TestEndgameDuplicatesStuckPieces(t *testing.T) {
	tf := makeFile(t, 16*pieces.Size, 16)
	stuck := newGate()
	release := newGate()
	stuckSrc := newMemSource(tf)
	stuckSrc.beforeRead = func(int64, int) { stuck.open(); release.wait() }
	slow := newProvider(t, stuckSrc, ServerOptions{Enabled: true})
	t.Cleanup(release.open)
	fastSrc := newMemSource(tf)
	fastSrc.beforeRead = func(int64, int) { stuck.wait() }
	fast := newProvider(t, fastSrc, ServerOptions{Enabled: true})
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(slow.h), addrInfo(fast.h)},
		FetchOptions{Dir: dir, BatchPieces: 2, StallTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	if res.PeerPieces[fast.h.ID()] != len(tf.leaves) || len(res.BadPeers) != 0 {
		t.Fatalf("pieces %v, faults %+v: want all from the fast provider, no faults", res.PeerPieces, res.BadPeers)
	}
}

func TestUploadSlotsBusy(t *testing.T) {
	tf := makeFile(t, 4*pieces.Size, 11)
	entered := newGate()
	release := newGate()
	src := newMemSource(tf)
	src.beforeRead = func(int64, int) { entered.open(); release.wait() }
	p := newProvider(t, src, ServerOptions{Enabled: true, UploadSlots: 1, SlotWait: 50 * time.Millisecond})
	t.Cleanup(release.open)

	// First peer takes the only slot and holds it.
	first := newHost(t)
	done := make(chan error, 1)
	go func() {
		_, err := Fetch(testCtx(t), first, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: t.TempDir(), MaxInFlightPerPeer: 1})
		done <- err
	}()
	entered.wait()
	// Second peer is refused as busy (after its retries).
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: t.TempDir()})
	var re *RemoteError
	f, ok := faultOf(res, p.h.ID())
	if !errors.Is(err, ErrNoProviders) || !ok || !errors.As(f.Err, &re) || re.Code != statusBusy {
		t.Fatalf("second peer: %v, faults %+v; want busy", err, res.BadPeers)
	}
	release.open()
	if err := <-done; err != nil {
		t.Fatalf("first peer: %v", err)
	}
}

func TestFetchVerifyHookAndHashMismatch(t *testing.T) {
	tf := makeFile(t, 3*pieces.Size+1, 12)
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	h := newHost(t)

	dir := t.TempDir()
	final := filepath.Join(dir, "out", "file.gpkg.tar")
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		t.Fatal(err)
	}
	var hookSaw []byte
	_, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{
		Dir: dir, Path: final,
		Verify: func(path string) error {
			hookSaw, _ = os.ReadFile(path)
			return errTest
		},
	})
	if !errors.Is(err, ErrVerify) || !errors.Is(err, errTest) {
		t.Fatalf("got %v, want ErrVerify wrapping the hook error", err)
	}
	if !bytes.Equal(hookSaw, tf.data) {
		t.Fatalf("verify hook did not see the complete file")
	}
	if _, err := os.Stat(final); !os.IsNotExist(err) {
		t.Fatalf("rejected file visible at final path: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.part")); len(left) != 0 {
		t.Fatalf("rejected part file kept: %v", left)
	}

	// Pieces match the root but the attested SHA-256 is wrong: the
	// provider holds it under that (wrong) address.
	lying := *tf
	lying.want.SHA256[0] ^= 1
	p2 := newProvider(t, newMemSource(&lying), ServerOptions{Enabled: true})
	_, err = Fetch(testCtx(t), h, lying.want, []peer.AddrInfo{addrInfo(p2.h)}, FetchOptions{Dir: dir})
	if !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("got %v, want ErrHashMismatch", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 1 { // only out/
		t.Fatalf("files left after hash mismatch: %v", left)
	}
}

func TestFetchRejectsBadWant(t *testing.T) {
	tf := makeFile(t, 10, 13)
	w := tf.want
	w.PieceSize = 1 << 20
	_, err := Fetch(testCtx(t), newHost(t), w, nil, FetchOptions{Dir: t.TempDir()})
	if !errors.Is(err, ErrWant) {
		t.Fatalf("got %v, want ErrWant", err)
	}
	w = tf.want
	w.Size = MaxFileSize + 1
	if _, err := Fetch(testCtx(t), newHost(t), w, nil, FetchOptions{Dir: t.TempDir()}); !errors.Is(err, ErrWant) {
		t.Fatalf("oversized want: %v, want ErrWant", err)
	}
	_, err = Fetch(testCtx(t), newHost(t), tf.want, nil, FetchOptions{})
	if !errors.Is(err, ErrWant) || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("got %v, want ErrWant naming Dir", err)
	}
}

func TestFetchLockedByAnotherFetch(t *testing.T) {
	tf := makeFile(t, 2*pieces.Size, 14)
	dir := t.TempDir()
	pf, err := openPart(dir, tf.want, osOpenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.close()
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	_, err = Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
}

func TestOpenFileServesRealFixture(t *testing.T) {
	path := filepath.Join("testdata", "hello-1.0.gpkg.tar")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Size() != int64(len(data)) || pieces.RootOf(f.Leaves()) != pieces.Leaf(data) {
		t.Fatalf("OpenFile layer does not match the file")
	}
	if _, err := OpenFile(path, make([][32]byte, 3)); err == nil {
		t.Fatalf("a cached layer of the wrong length was accepted")
	}
}

// gathered returns the value of a counter (with the given label value, or
// unlabelled when label is "") from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestNoGoroutinesLeft: after Fetch returns and the server is closed, no
// goroutine of this package is left running (libp2p's own goroutines end
// with their hosts and are not ours to police).
func TestNoGoroutinesLeft(t *testing.T) {
	tf := makeFile(t, 20*pieces.Size+1, 15)
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	dir := t.TempDir()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir, BatchPieces: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	if err := p.srv.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var ours []string
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "gentoo-p2pd/transfer.") && !strings.Contains(g, "transfer.TestNoGoroutinesLeft") && !strings.Contains(g, "testing.tRunner") {
				ours = append(ours, g)
			}
		}
		if len(ours) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left:\n%s", strings.Join(ours, "\n\n"))
		}
		<-poll.C
	}
}

// errSource answers every Open with err.
type errSource struct{ err error }

func (s errSource) Open([32]byte) (File, error) { return nil, s.err }

// levelCounter counts log records at or above a level.
type levelCounter struct {
	min slog.Level
	n   atomic.Int32
}

func (h *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= h.min {
		h.n.Add(1)
	}
	return nil
}
func (h *levelCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelCounter) WithGroup(string) slog.Handler      { return h }

// TestUnknownFileIsNotFound: a Source that does not hold the file (the
// ErrNotFound sentinel, or a file gone from disk: fs.ErrNotExist) makes the
// server answer "not found" without logging a warning, and the fetcher
// lists the provider as not holding the file instead of as a bad peer.
// Other Source errors are "internal" and warn, at a bounded rate.
func TestUnknownFileIsNotFound(t *testing.T) {
	tf := makeFile(t, 3*pieces.Size, 17)
	_, err := OpenFile(filepath.Join(t.TempDir(), "gone"), nil)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenFile of a missing file: %v, want ErrNotFound and fs.ErrNotExist", err)
	}
	for _, tt := range []struct {
		name     string
		err      error
		notFound bool
	}{
		{"sentinel", fmt.Errorf("daemon: %w", ErrNotFound), true},
		{"file gone", err, true},
		{"plain fs.ErrNotExist", fmt.Errorf("lookup: %w", fs.ErrNotExist), true},
		{"broken", errTest, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			warns := &levelCounter{min: slog.LevelWarn}
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			h := newHost(t)
			srv := NewServer(h, errSource{tt.err}, ServerOptions{Enabled: true, Logger: slog.New(warns), Metrics: m})
			t.Cleanup(func() { srv.Close() })
			const fetches = 8
			for range fetches {
				res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(h)}, FetchOptions{Dir: t.TempDir()})
				if !errors.Is(err, ErrNoProviders) {
					t.Fatalf("got %v, want ErrNoProviders", err)
				}
				if tt.notFound {
					if len(res.BadPeers) != 0 || len(res.NotHeld) != 1 || res.NotHeld[0] != h.ID() {
						t.Fatalf("faults %+v, not held %v: want no fault, provider not holding the file", res.BadPeers, res.NotHeld)
					}
					if !strings.Contains(err.Error(), "does not hold the file") {
						t.Fatalf("error %q does not say the provider lacks the file", err)
					}
				} else {
					var re *RemoteError
					if f, ok := faultOf(res, h.ID()); !ok || !errors.As(f.Err, &re) || re.Code != statusInternal {
						t.Fatalf("faults %+v: want an internal error", res.BadPeers)
					}
				}
			}
			status := "internal error"
			if tt.notFound {
				status = "not found"
			}
			if got := gathered(t, reg, "gentoo_p2pd_transfer_server_refusals_total", status); got != fetches {
				t.Fatalf("%s refusals %v, want %d", status, got, fetches)
			}
			switch w := warns.n.Load(); {
			case tt.notFound && w != 0:
				t.Fatalf("%d warnings for files the source does not hold", w)
			case !tt.notFound && (w == 0 || w >= fetches):
				t.Fatalf("%d warnings for %d failing opens: want some, but paced", w, fetches)
			}
		})
	}
}
