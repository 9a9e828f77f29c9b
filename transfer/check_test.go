package transfer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// streamCheck is a Check as the daemon's: a trailer probe, then one
// sequential pass hashing every byte. It keeps what it read.
func streamCheck(saw *bytes.Buffer) func(io.ReaderAt, int64) ([32]byte, error) {
	return func(r io.ReaderAt, size int64) ([32]byte, error) {
		var trailer [16]byte
		if _, err := r.ReadAt(trailer[:], size-int64(len(trailer))); err != nil {
			return [32]byte{}, err
		}
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(h, saw), io.NewSectionReader(r, 0, size)); err != nil {
			return [32]byte{}, err
		}
		return [32]byte(h.Sum(nil)), nil
	}
}

// Check sees exactly the file, in one pass over verified pieces, and its
// SHA-256 is the one Fetch checks.
func TestFetchCheckReadsVerifiedPieces(t *testing.T) {
	tf := makeFile(t, 40*pieces.Size+5, 21)
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	dir := t.TempDir()
	var saw bytes.Buffer
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{
		Dir: dir, BatchPieces: 2, Check: streamCheck(&saw),
	})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	if !bytes.Equal(saw.Bytes(), tf.data) {
		t.Fatalf("Check read %d bytes that differ from the file", saw.Len())
	}
}

// A Check that rejects the content fails the fetch with ErrVerify at once
// and removes the partial files; a Check whose sum is not the attested
// SHA-256 fails it with ErrHashMismatch.
func TestFetchCheckRejects(t *testing.T) {
	tf := makeFile(t, 24*pieces.Size, 22)
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	h := newHost(t)
	for _, tt := range []struct {
		name  string
		check func(io.ReaderAt, int64) ([32]byte, error)
		want  error
	}{
		{"content", func(r io.ReaderAt, size int64) ([32]byte, error) {
			var b [1]byte
			if _, err := r.ReadAt(b[:], 0); err != nil {
				return [32]byte{}, err
			}
			return [32]byte{}, errTest
		}, ErrVerify},
		{"sum", func(r io.ReaderAt, size int64) ([32]byte, error) {
			sum, err := streamCheck(&bytes.Buffer{})(r, size)
			sum[0] ^= 1
			return sum, err
		}, ErrHashMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "final")
			_, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir, Path: final, Check: tt.check})
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if errors.Is(tt.want, ErrVerify) && !errors.Is(err, errTest) {
				t.Fatalf("%v does not wrap the Check error", err)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Fatalf("files left: %v", left)
			}
		})
	}
}

// When the download stops short (the only provider goes away), a Check
// waiting for a piece returns, the fetch reports the provider failure —
// not a verdict on the content — and keeps the partial file for resume.
func TestFetchCheckEndsWithTheFetch(t *testing.T) {
	tf := makeFile(t, 16*pieces.Size, 23)
	src := newMemSource(tf)
	// Pieces 4 to 14 come corrupted: the only provider is dropped.
	src.mutate = func(p []byte, off int64) {
		if off >= 4*pieces.Size && off < 15*pieces.Size {
			for i := range p {
				p[i] ^= 0xff
			}
		}
	}
	p := newProvider(t, src, ServerOptions{Enabled: true})
	dir := t.TempDir()
	checkErr := make(chan error, 1)
	_, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{
		Dir: dir, BatchPieces: 1,
		Check: func(r io.ReaderAt, size int64) ([32]byte, error) {
			sum, err := streamCheck(&bytes.Buffer{})(r, size)
			checkErr <- err
			return sum, err
		},
	})
	if !errors.Is(err, ErrNoProviders) || errors.Is(err, ErrVerify) {
		t.Fatalf("got %v, want ErrNoProviders", err)
	}
	if cerr := <-checkErr; !errors.Is(cerr, errFetchEnded) {
		t.Fatalf("Check ended with %v, want errFetchEnded", cerr)
	}
	if _, err := os.Stat(filepath.Join(dir, partName(tf.want)+".part")); err != nil {
		t.Fatalf("partial file not kept for resume: %v", err)
	}
}

func partName(w Want) string {
	part, _ := partPaths("", w.SHA256)
	return part[:len(part)-len(".part")]
}

// With a Check, the last piece is handed out first: formats with a
// trailer (XPAK) read it before anything else.
func TestSchedulerHandsOutFirstPieceFirst(t *testing.T) {
	s := newScheduler(make([]bool, 10))
	s.first = 9
	inflight := map[int]struct{}{}
	if first, count, _ := s.next(inflight, 4); first != 9 || count != 1 {
		t.Fatalf("first batch %d+%d, want the last piece alone", first, count)
	}
	if first, count, _ := s.next(inflight, 4); first != 0 || count != 4 {
		t.Fatalf("second batch %d+%d, want 0+4", first, count)
	}
}
