package transfer

import (
	"bufio"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// waitFor polls cond until it holds, failing the test after a generous
// bound (a broken server must fail the test, not hang it).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		<-tick.C
	}
}

// askLayer makes one layer request from h to the provider and reads the
// whole answer.
func askLayer(ctx context.Context, h, to host.Host, tf *testFile) error {
	if err := h.Connect(ctx, addrInfo(to)); err != nil {
		return err
	}
	st, err := h.NewStream(ctx, to.ID(), ProtocolID)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Write(appendRequest(nil, request{Op: opLayer, File: tf.want.SHA256})); err != nil {
		return err
	}
	st.CloseWrite()
	br := bufio.NewReader(st)
	if err := readStatus(br); err != nil {
		return err
	}
	_, _, err = readLayer(br, len(tf.leaves))
	return err
}

// hog is an attacker identity that keeps n range requests open against a
// provider and never reads their data. It looks at each stream only to
// learn whether it is still being served: it reads the status byte, and
// then one byte at a time (far below the 128 KiB a yamux reader must
// consume before the sender's window reopens), which tells a reset apart.
// A refused or reset request is asked again at once, as an attacker
// would.
type hog struct {
	h      host.Host
	to     peer.ID
	req    []byte
	resets atomic.Int32 // served streams the provider reset
	asked  atomic.Int32 // requests sent
}

type hogStream struct {
	st     network.Stream
	served bool
}

func newHog(t *testing.T, to host.Host, tf *testFile) *hog {
	h := newHost(t)
	if err := h.Connect(testCtx(t), addrInfo(to)); err != nil {
		t.Fatal(err)
	}
	return &hog{h: h, to: to.ID(), req: appendRequest(nil, request{Op: opRange, File: tf.want.SHA256, Count: uint64(len(tf.leaves))})}
}

func (a *hog) open(ctx context.Context) *hogStream {
	st, err := a.h.NewStream(ctx, a.to, ProtocolID)
	if err != nil {
		return nil
	}
	a.asked.Add(1)
	if _, err := st.Write(a.req); err != nil {
		st.Reset()
		return nil
	}
	st.CloseWrite()
	return &hogStream{st: st}
}

// alive reports whether s may still be holding a request at the provider.
func (a *hog) alive(s *hogStream) bool {
	var b [1]byte
	s.st.SetReadDeadline(time.Now().Add(time.Millisecond))
	n, err := s.st.Read(b[:])
	switch {
	case n == 1 && !s.served:
		if b[0] != statusOK {
			s.st.Reset() // refused (busy): ask again
			return false
		}
		s.served = true
		return true
	case n == 1:
		return true
	case errors.Is(err, network.ErrReset):
		if s.served {
			a.resets.Add(1)
		}
		return false
	case errors.Is(err, os.ErrDeadlineExceeded):
		return true // no answer yet: queued, or the window is still in flight
	}
	s.st.Reset()
	return false
}

// run keeps n requests open until ctx ends.
func (a *hog) run(ctx context.Context, n int) {
	streams := make([]*hogStream, n)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for i, s := range streams {
			if s == nil || !a.alive(s) {
				streams[i] = a.open(ctx)
			}
		}
		select {
		case <-ctx.Done():
			for _, s := range streams {
				if s != nil {
					s.st.Reset()
				}
			}
			return
		case <-tick.C:
		}
	}
}

// TestStalledHoldersYieldSlots: 8 attacker identities take all 8 upload
// slots with as many range requests as they may open, never read them, and
// ask again whenever refused or reset. An honest fetcher still gets a slot
// (a stalled holder loses its slot to a waiting peer once it has made no
// progress for ProgressTimeout) and completes; the attackers' streams are
// reset. Defaults throughout: this is the configuration users run.
func TestStalledHoldersYieldSlots(t *testing.T) {
	tf := makeFile(t, 8*pieces.Size, 50) // 2 MiB: far more than a stream window
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true, Metrics: m})
	const attackers, perPeer = 8, 8 // defaults: UploadSlots, MaxRequestsPerPeer
	ctx, stop := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	hogs := make([]*hog, attackers)
	for i := range hogs {
		hogs[i] = newHog(t, p.h, tf)
		wg.Go(func() { hogs[i].run(ctx, perPeer) })
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, "the attackers hold every slot with all their requests", func() bool {
		held, _, active := p.srv.slotState()
		return held == attackers && active == attackers*perPeer
	})

	dir := t.TempDir()
	start := time.Now()
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
	if err != nil {
		t.Fatalf("honest fetch while attackers hog every slot: %v", err)
	}
	t.Logf("honest fetch done in %v (for information: timings are not asserted)", time.Since(start))
	checkComplete(t, dir, res, tf)
	if len(res.BadPeers) != 0 {
		t.Fatalf("honest fetch dropped the provider: %+v", res.BadPeers)
	}
	// The slot the honest peer got was taken from an attacker, whose
	// streams were all reset (the attackers notice when they next look).
	resets := func() (n int32) {
		for _, a := range hogs {
			n += a.resets.Load()
		}
		return n
	}
	waitFor(t, "the attackers see the streams of the slot taken from them reset", func() bool { return resets() >= perPeer })
	stop()
	wg.Wait()
	var asked int32
	for _, a := range hogs {
		asked += a.asked.Load()
	}
	t.Logf("attackers sent %d requests; %d of their served streams were reset", asked, resets())
	if got := gathered(t, reg, "gentoo_p2pd_transfer_server_slot_reclaims_total", "stalled"); got < 1 {
		t.Fatalf("stalled-slot reclaims %v, want at least 1", got)
	}
}

// TestRateLimitedPeerKeepsSlot: a peer served slowly because of our own
// PerPeerRate cap is not stalling (the time it waits on our rate limiter
// is ours), so it keeps its slot while another peer waits for it, even
// with a ProgressTimeout far shorter than the transfer; the waiting peer
// is served after it.
func TestRateLimitedPeerKeepsSlot(t *testing.T) {
	const rateCap = 256 << 10 // 512 KiB take ~2 s; ProgressTimeout is 100 ms
	tf := makeFile(t, 2*pieces.Size, 51)
	contention := newGate()
	src := newMemSource(tf)
	src.beforeRead = func(int64, int) { contention.wait() }
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, src, ServerOptions{
		Enabled: true, UploadSlots: 1, PerPeerRate: rateCap, Metrics: m,
		ProgressTimeout: 100 * time.Millisecond, SlotWait: time.Minute,
	})
	t.Cleanup(contention.open)

	type result struct {
		res Result
		err error
	}
	fetch := func(out chan<- result) {
		dir := t.TempDir()
		res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
		if err == nil {
			checkComplete(t, dir, res, tf)
		}
		out <- result{res, err}
	}
	slow, second := make(chan result, 1), make(chan error, 1)
	go fetch(slow)
	waitFor(t, "the slow peer holds the only slot", func() bool {
		held, _, active := p.srv.slotState()
		return held == 1 && active > 0
	})
	// The waiting peer asks for the layer only: its answer is small.
	go func() { second <- askLayer(testCtx(t), newHost(t), p.h, tf) }()
	waitFor(t, "the second peer waits for the slot", func() bool {
		_, queued, _ := p.srv.slotState()
		return queued == 1
	})
	contention.open() // the slow transfer runs while a peer waits

	r := <-slow
	if r.err != nil || len(r.res.BadPeers) != 0 {
		t.Fatalf("rate-limited peer: %v, faults %+v", r.err, r.res.BadPeers)
	}
	if err := <-second; err != nil {
		t.Fatalf("waiting peer: %v", err)
	}
	for _, reason := range []string{"stalled", "tenure"} {
		if got := gathered(t, reg, "gentoo_p2pd_transfer_server_slot_reclaims_total", reason); got != 0 {
			t.Fatalf("%v slots reclaimed (%s) from a peer slowed only by our rate cap", got, reason)
		}
	}
}

// TestLongHolderYieldsSlot: a peer that keeps the only slot busy with
// back-to-back requests it reads at once (it never stalls, and its slot
// lingers between requests) hands the slot on after SlotTenure to a peer
// that waits, instead of keeping it for as long as it likes.
func TestLongHolderYieldsSlot(t *testing.T) {
	tf := makeFile(t, pieces.Size, 52)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, newMemSource(tf), ServerOptions{
		Enabled: true, UploadSlots: 1, Metrics: m,
		SlotTenure: 200 * time.Millisecond, SlotWait: 20 * time.Second,
	})
	ctx, stop := context.WithCancel(testCtx(t))
	done := make(chan struct{})
	var served atomic.Int32
	go func() {
		defer close(done)
		h := newHost(t)
		for ctx.Err() == nil {
			if askLayer(ctx, h, p.h, tf) == nil {
				served.Add(1)
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	waitFor(t, "the first peer holds the only slot", func() bool {
		held, _, _ := p.srv.slotState()
		return held == 1 && served.Load() > 0
	})
	if err := askLayer(testCtx(t), newHost(t), p.h, tf); err != nil {
		t.Fatalf("waiting peer: %v", err)
	}
	if got := gathered(t, reg, "gentoo_p2pd_transfer_server_slot_reclaims_total", "tenure"); got < 1 {
		t.Fatalf("slots handed on after their tenure: %v, want at least 1", got)
	}
}
