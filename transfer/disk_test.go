package transfer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// failingFS opens the real files of a partial download but makes one
// operation ("write", "sync" or "truncate" on the "part" or "bits" file)
// fail with err once it succeeded `after` times: a disk that fills up or
// breaks mid-download, without root or a tiny file system.
type failingFS struct {
	op, kind string
	after    int32
	err      error
	calls    atomic.Int32
	failed   atomic.Bool
}

func (fs *failingFS) open(name string, flag int, perm os.FileMode) (diskFile, error) {
	f, err := osOpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	kind := "part"
	if strings.HasSuffix(name, ".bits") {
		kind = "bits"
	}
	return &failingFile{diskFile: f, fs: fs, kind: kind, name: name}, nil
}

type failingFile struct {
	diskFile
	fs   *failingFS
	kind string
	name string
}

func (f *failingFile) hit(op string) error {
	if op != f.fs.op || f.kind != f.fs.kind || f.fs.calls.Add(1) <= f.fs.after {
		return nil
	}
	f.fs.failed.Store(true)
	return &os.PathError{Op: op, Path: f.name, Err: f.fs.err}
}

func (f *failingFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.hit("write"); err != nil {
		return 0, err
	}
	return f.diskFile.WriteAt(p, off)
}

func (f *failingFile) Sync() error {
	if err := f.hit("sync"); err != nil {
		return err
	}
	return f.diskFile.Sync()
}

func (f *failingFile) Truncate(n int64) error {
	if err := f.hit("truncate"); err != nil {
		return err
	}
	return f.diskFile.Truncate(n)
}

// TestFetchDiskWriteFails: when the part file or the bitfield cannot be
// written or synced, Fetch stops, removes both files (a full disk must not
// stay full of a download that cannot finish), blames no provider and
// returns an ErrDiskWrite that names the cause; with the disk fixed, the
// next Fetch starts over and completes.
func TestFetchDiskWriteFails(t *testing.T) {
	tf := makeFile(t, 16*pieces.Size+100, 40)
	p := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true})
	h := newHost(t)
	tests := []struct {
		name      string
		fs        *failingFS
		msg       string
		piecesMax int // pieces written before the failure, at most
	}{
		{"disk full writing a piece", &failingFS{op: "write", kind: "part", after: 3, err: syscall.ENOSPC},
			"disk full writing piece", 3},
		{"disk full writing the bitfield", &failingFS{op: "write", kind: "bits", after: 1, err: syscall.ENOSPC},
			"disk full writing the bitfield of", len(tf.leaves)},
		{"quota exceeded sizing the part file", &failingFS{op: "truncate", kind: "part", after: 1, err: syscall.EDQUOT},
			"disk full sizing", 0},
		{"fsync fails", &failingFS{op: "sync", kind: "part", err: syscall.EIO},
			"syncing the partial download", len(tf.leaves)},
		{"bitfield fsync fails at open", &failingFS{op: "sync", kind: "bits", err: syscall.EIO},
			"syncing the bitfield of the partial download", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			res, err := Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{
				Dir: dir, BatchPieces: 1, SyncBytes: pieces.Size, openFile: tt.fs.open,
			})
			if !tt.fs.failed.Load() {
				t.Fatalf("the injected failure never happened (err %v)", err)
			}
			if !errors.Is(err, ErrDiskWrite) || !errors.Is(err, tt.fs.err) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want ErrDiskWrite wrapping %v and saying %q", err, tt.fs.err, tt.msg)
			}
			t.Logf("error: %v", err)
			if len(res.BadPeers) != 0 {
				t.Fatalf("a local write failure blamed providers: %+v", res.BadPeers)
			}
			if res.PiecesFetched > tt.piecesMax || res.Path != "" {
				t.Fatalf("%d pieces written (at most %d), path %q after the failure", res.PiecesFetched, tt.piecesMax, res.Path)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
				t.Fatalf("files left after a write failure: %v", left)
			}

			res, err = Fetch(testCtx(t), h, tf.want, []peer.AddrInfo{addrInfo(p.h)}, FetchOptions{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			checkComplete(t, dir, res, tf)
			if res.PiecesReused != 0 {
				t.Fatalf("reused %d pieces of a removed partial download", res.PiecesReused)
			}
		})
	}
}
