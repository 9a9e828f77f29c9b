package transfer

import (
	"crypto/sha256"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// benchFile writes size random bytes to a file and returns its path and
// Want, hashing it the way a provider would.
func benchFile(b *testing.B, size int64) (string, Want, [][32]byte) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "bench.gpkg.tar")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{42})
	sum := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, sum), r, size); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	lf, err := OpenFile(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	leaves := lf.Leaves()
	lf.Close()
	w := Want{Size: size, PieceRoot: pieces.RootOf(leaves), PieceSize: pieces.Size}
	sum.Sum(w.SHA256[:0])
	return path, w, leaves
}

// pathSource serves one file from disk with a cached layer.
type pathSource struct {
	path   string
	sha    [32]byte
	leaves [][32]byte
}

func (s *pathSource) Open(sha [32]byte) (File, error) {
	if sha != s.sha {
		return nil, ErrNotFound
	}
	return OpenFile(s.path, s.leaves)
}

// resourceMeter measures process CPU time (both ends of the loopback run
// in this process) and the peak of live heap memory.
type resourceMeter struct {
	start    syscall.Rusage
	stop     chan struct{}
	wg       sync.WaitGroup
	peakHeap uint64
}

func startMeter() *resourceMeter {
	m := &resourceMeter{stop: make(chan struct{})}
	syscall.Getrusage(syscall.RUSAGE_SELF, &m.start)
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	m.wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			m.peakHeap = max(m.peakHeap, sample[0].Value.Uint64())
			select {
			case <-t.C:
			case <-m.stop:
				return
			}
		}
	})
	return m
}

// report adds cpu-s/GiB (user+system CPU of the whole process per GiB moved)
// and peak-heap-MiB to b.
func (m *resourceMeter) report(b *testing.B, bytes int64) {
	close(m.stop)
	m.wg.Wait()
	var end syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &end)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	cpu := tv(end.Utime) - tv(m.start.Utime) + tv(end.Stime) - tv(m.start.Stime)
	b.ReportMetric(cpu/(float64(bytes)/(1<<30)), "cpu-s/GiB")
	b.ReportMetric(float64(m.peakHeap)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(end.Maxrss)/1024, "maxrss-MiB")
}

const benchSize = 256 << 20

// BenchmarkFetch1Provider fetches 256 MiB from one provider over real
// libp2p hosts (TCP + TLS 1.3 + yamux on loopback), verifying every piece,
// writing and fsyncing the part file, checking the whole-file SHA-256 and
// renaming: everything a real fetch does. dir=tmpfs writes to /dev/shm and
// so compares with the HTTP baselines, which write nothing; dir=disk writes
// to the real disk (this VM's disk does ~160 MB/s with fsync).
func BenchmarkFetch1Provider(b *testing.B) {
	path, want, leaves := benchFile(b, benchSize)
	srvHost := newHost(b)
	srv := NewServer(srvHost, &pathSource{path: path, sha: want.SHA256, leaves: leaves}, ServerOptions{Enabled: true})
	defer srv.Close()
	h := newHost(b)
	ctx := testCtx(b)
	dirs := map[string]string{"disk": b.TempDir()}
	if shm, err := os.MkdirTemp("/dev/shm", "transfer-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dirs["tmpfs"] = shm
	}
	for _, name := range []string{"tmpfs", "disk"} {
		dir, ok := dirs[name]
		if !ok {
			continue
		}
		b.Run("dir="+name, func(b *testing.B) {
			b.SetBytes(benchSize)
			m := startMeter()
			for b.Loop() {
				res, err := Fetch(ctx, h, want, []peer.AddrInfo{addrInfo(srvHost)}, FetchOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.Remove(res.Path)
				b.StartTimer()
			}
			b.StopTimer()
			m.report(b, int64(b.N)*benchSize)
		})
	}
}

// httpBench serves the file with net/http (plain or TLS 1.3) and has the
// client read it and check its SHA-256, as the baseline to beat.
func httpBench(b *testing.B, useTLS bool) {
	path, want, _ := benchFile(b, benchSize)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) })
	srv := httptest.NewUnstartedServer(handler)
	if useTLS {
		srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	defer srv.Close()
	client := srv.Client()
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	m := startMeter()
	b.ResetTimer()
	for b.Loop() {
		resp, err := client.Get(srv.URL + "/file")
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(h, resp.Body, buf); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.TLS == nil && useTLS || resp.TLS != nil && resp.TLS.Version != tls.VersionTLS13 {
			b.Fatalf("not TLS 1.3")
		}
		var sum [32]byte
		if h.Sum(sum[:0]); sum != want.SHA256 {
			b.Fatal("sha mismatch")
		}
	}
	b.StopTimer()
	m.report(b, int64(b.N)*benchSize)
}

// BenchmarkHTTPSTLS13 is Go net/http over TLS 1.3 (self-signed cert from
// httptest), client reads and SHA-256-verifies, nothing written to disk.
func BenchmarkHTTPSTLS13(b *testing.B) { httpBench(b, true) }

// BenchmarkHTTPPlain is the same without TLS.
func BenchmarkHTTPPlain(b *testing.B) { httpBench(b, false) }

// BenchmarkFetch4ProvidersCapped fetches 64 MiB from four providers each
// capped at 20 MB/s; cap-ratio is the achieved rate over the 80 MB/s sum.
func BenchmarkFetch4ProvidersCapped(b *testing.B) {
	const size = 64 << 20
	const capRate = 20_000_000
	path, want, leaves := benchFile(b, size)
	var infos []peer.AddrInfo
	for range 4 {
		h := newHost(b)
		srv := NewServer(h, &pathSource{path: path, sha: want.SHA256, leaves: leaves}, ServerOptions{Enabled: true, PerPeerRate: capRate})
		defer srv.Close()
		infos = append(infos, addrInfo(h))
	}
	ctx := testCtx(b)
	// tmpfs when available: this measures scheduling against the caps,
	// not this VM's disk.
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "transfer-bench-"); err == nil {
		defer os.RemoveAll(shm)
		dir = shm
	}
	b.SetBytes(size)
	m := startMeter()
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		// A fresh fetching host per round: the providers' per-peer token
		// buckets must not carry over between rounds.
		b.StopTimer()
		h := newHost(b)
		b.StartTimer()
		start := time.Now()
		res, err := Fetch(ctx, h, want, infos, FetchOptions{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		os.Remove(res.Path)
		h.Close()
		b.StartTimer()
	}
	b.StopTimer()
	rate := float64(int64(b.N)*size) / total.Seconds()
	b.ReportMetric(rate/(4*capRate), "cap-ratio")
	m.report(b, int64(b.N)*size)
}
