package own

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// testPeer is one daemon's own-builds job with everything it stands on:
// a peer of an in-memory network (store, votes book, node serving the
// book) at threshold 1.
type testPeer struct {
	*jobtest.Peer
	ob     *Builds
	reg    *prometheus.Registry
	pkgdir string
}

type peerOptions struct {
	mode       config.Mode // default share
	downloaded openpgp.EntityList
	st         *store.Store // reuse a store (a restart); nil: a fresh one
	key        crypto.PrivKey
	logger     *slog.Logger // nil: discard
	vdb        string       // "": an empty one of the test's own
}

func newPeer(t *testing.T, net *memnet.Network, pkgdir string, o peerOptions) *testPeer {
	t.Helper()
	opts := []jobtest.PeerOption{jobtest.WithThreshold(1)}
	if o.key != nil {
		opts = append(opts, jobtest.WithKey(o.key))
	}
	if o.st != nil {
		opts = append(opts, jobtest.WithStore(o.st))
	}
	mode := o.mode
	if mode == "" {
		mode = config.ModeShare
	}
	if o.vdb == "" {
		// Never this machine's: what a test's builds state is the test's.
		o.vdb = filepath.Join(t.TempDir(), "var/db/pkg")
	}
	p := &testPeer{Peer: jobtest.NewPeer(t, net, opts...), reg: prometheus.NewRegistry(), pkgdir: pkgdir}
	p.ob = New(Options{
		Store: p.Store, Votes: p.Book, Net: p.Node, Key: p.Key, Self: p.ID, PkgDir: pkgdir, Mode: mode,
		Files: xpak.DefaultLimits(), Downloaded: o.downloaded, Registry: p.reg, Logger: o.logger, VDB: o.vdb,
	})
	return p
}

func (p *testPeer) start(t *testing.T) {
	t.Helper()
	if err := p.ob.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// ownAtts are the attestations by p stored for a build key.
func (p *testPeer) ownAtts(t *testing.T, bk keys.Build) []*trust.Signed {
	t.Helper()
	return p.AttestationsBy(t, bk, p.ID)
}

func (p *testPeer) announces(t *testing.T) float64 {
	t.Helper()
	return jobtest.Counter(t, p.reg, "gentoo_p2pd_announces_total")
}

// logRecorder is a slog.Handler keeping every record's message and
// attributes (those added by With included) as text.
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]string
	attrs string
}

func newLogRecorder() *logRecorder { return &logRecorder{mu: &sync.Mutex{}, lines: new([]string)} }

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	line := rec.Level.String() + " " + rec.Message + r.attrs
	rec.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.lines = append(*r.lines, line)
	return nil
}

func (r *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	n := *r
	for _, a := range as {
		n.attrs += " " + a.String()
	}
	return &n
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

// matching returns the recorded lines containing s.
func (r *logRecorder) matching(s string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range *r.lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}
