package materialize

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
)

// Open serves own builds (share and mirror modes), cached builds that are
// allowed, and in mirror mode cached builds not decided yet; consume mode
// serves nothing, and no mode serves a disputed build.
func TestOpen(t *testing.T) {
	t.Parallel()
	type want struct{ local, allowed, undecided, disputed bool }
	for _, tc := range []struct {
		mode config.Mode
		want want
	}{
		{config.ModeConsume, want{}},
		{config.ModeShare, want{local: true, allowed: true}},
		{config.ModeMirror, want{local: true, allowed: true, undecided: true}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			w := newWorld(t)
			a, b, c := w.remote(), w.remote(), w.remote()
			s := w.self(selfOpts{mode: tc.mode, threshold: 2})
			// hello: one vote of two (undecided); hello1 is an own build.
			s.learn(jobtest.Attest(t, c.Key, w.hello2, at(0)))
			s.local(w.hello1)
			s.cache(w.hello2)
			// layout: allowed, a copy cached.
			s.learn(jobtest.Attest(t, a.Key, w.layout1, at(0)), jobtest.Attest(t, b.Key, w.layout2, at(1)))
			s.cache(w.layout2)
			// A disputed build, by a daemon with threshold 1.
			d := w.self(selfOpts{mode: tc.mode, threshold: 1})
			d.learn(jobtest.Attest(t, a.Key, w.layout1, at(0)), jobtest.Attest(t, c.Key, w.evil, at(1)))
			d.cache(w.layout1)
			d.cache(w.evil)

			for _, f := range []struct {
				name  string
				s     *self
				pkg   jobtest.Binpkg
				serve bool
			}{
				{"own build", s, w.hello1, tc.want.local},
				{"allowed cached copy", s, w.layout2, tc.want.allowed},
				{"undecided cached copy", s, w.hello2, tc.want.undecided},
				{"disputed cached copy", d, w.layout1, tc.want.disputed},
				{"disputed cached competitor", d, w.evil, tc.want.disputed},
			} {
				file, err := f.s.mz.Open(f.pkg.Local.FileSHA256)
				if !f.serve {
					if !errors.Is(err, transfer.ErrNotFound) {
						t.Errorf("%s: %v, want transfer.ErrNotFound", f.name, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", f.name, err)
					continue
				}
				buf := make([]byte, file.Size())
				n, _ := file.ReadAt(buf, 0)
				if file.Size() != f.pkg.Local.Size || !bytes.Equal(buf[:n], f.pkg.Data) || len(file.Leaves()) != 1 {
					t.Errorf("%s: served %d bytes, %d leaves; want the file", f.name, n, len(file.Leaves()))
				}
				file.Close()
			}
		})
	}
}

// AnnounceCache provides the cached copies this daemon may serve, and
// nothing in consume mode.
func TestAnnounceCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode               config.Mode
		allowed, undecided bool
	}{
		{config.ModeConsume, false, false},
		{config.ModeShare, true, false},
		{config.ModeMirror, true, true},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			w := newWorld(t)
			a, b, c := w.remote(), w.remote(), w.remote()
			s := w.self(selfOpts{mode: tc.mode, threshold: 2})
			s.learn(jobtest.Attest(t, a.Key, w.layout1, at(0)), jobtest.Attest(t, b.Key, w.layout2, at(1)))
			s.cache(w.layout2)
			s.learn(jobtest.Attest(t, c.Key, w.hello2, at(0)))
			s.cache(w.hello2)
			if err := s.mz.AnnounceCache(); err != nil {
				t.Fatal(err)
			}
			if bp, vp := s.providing(w.layout2); bp != tc.allowed || vp != tc.allowed {
				t.Errorf("allowed copy: providing build %v variant %v, want %v", bp, vp, tc.allowed)
			}
			if bp, vp := s.providing(w.hello2); bp != tc.undecided || vp != tc.undecided {
				t.Errorf("undecided copy: providing build %v variant %v, want %v", bp, vp, tc.undecided)
			}
		})
	}
}

// A cached copy no attestation names is not announced.
func TestAnnounceCacheNeedsAnAttestation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a, b := w.remote(), w.remote()
	s := w.self(selfOpts{mode: config.ModeMirror})
	s.learn(jobtest.Attest(t, a.Key, w.layout1, at(0)), jobtest.Attest(t, b.Key, w.layout2, at(1)))
	s.cache(w.evil) // same build key, a file nobody attests
	if err := s.mz.AnnounceCache(); err != nil {
		t.Fatal(err)
	}
	if bp, vp := s.providing(w.evil); bp || vp {
		t.Errorf("a copy without an attestation was announced (build %v, variant %v)", bp, vp)
	}
}
