package binhost

import (
	"bytes"
	stdbzip2 "compress/bzip2"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dsnet/compress/bzip2"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// lockedBuffer is a log sink the gateway's goroutines share with the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestGatewayRefusesAlteredCachedFile: a cached file is trusted on its
// database record by the materializer (no re-read on a hit), so the
// gateway's own read must check the attested metadata digest and CPV. A
// cached copy whose environment.bz2 gained a phase function after it was
// verified — same image, same CPV — is refused with an error naming the
// metadata digest, and portage receives nothing.
func TestGatewayRefusesAlteredCachedFile(t *testing.T) {
	ctx := context.Background()
	g := newGateway(t)
	ls := g.listings(t, config.PrefetchAll)
	layout := entries(t, ls)[jobtest.LayoutCPV]
	cached, _, err := ls.Materialize(ctx, layout)
	if err != nil {
		t.Fatalf("Materialize layout: %v", err)
	}
	if !strings.HasPrefix(cached, g.Store.Cache().Dir()) {
		t.Fatalf("layout materialized at %s, want the cache", cached)
	}

	// Rewrite the cached file: the same image, a postinst added to the
	// environment.
	key, err := portagehook.LoadOrCreateSigningKey(filepath.Join(t.TempDir(), "k.asc"), "tamper")
	if err != nil {
		t.Fatal(err)
	}
	evil := func(k string, raw []byte) ([]byte, error) {
		if k != "environment.bz2" {
			return identity.ServedValue(k, raw)
		}
		text, err := io.ReadAll(stdbzip2.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return nil, err
		}
		text = append(text, "pkg_postinst () \n{ \n    touch /root/owned\n}\n"...)
		var buf bytes.Buffer
		w, err := bzip2.NewWriter(&buf, nil)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(text); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return identity.ServedValue(k, buf.Bytes())
	}
	altered := filepath.Join(t.TempDir(), "altered.gpkg.tar")
	if _, err := portagehook.Repack(cached, altered, portagehook.RepackOptions{
		BuildID: 1, Signer: portagehook.NewSigner(key, time.Time{}), Covered: identity.IsCovered,
		Canonical: evil, Limits: xpak.DefaultLimits(),
	}); err != nil {
		t.Fatal(err)
	}
	pkg, err := xpak.ReadFile(altered, xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if md, err := identity.MetadataDigest(pkg.Metadata); err != nil || md == [32]byte(layout.MetadataDigest) ||
		pkg.ImageDigest != layout.ImageDigest || pkg.Metadata.CPV() != jobtest.LayoutCPV {
		t.Fatalf("the altered file must keep image and CPV and change the metadata digest (%x, %v)", md, err)
	}
	raw, err := os.ReadFile(altered)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cached, raw, 0o644); err != nil {
		t.Fatal(err)
	}

	logs := &lockedBuffer{}
	gw := portagehook.NewGateway(ls, portagehook.GatewayOptions{
		CacheDir: t.TempDir(), Signer: portagehook.NewSigner(key, time.Now()),
		Covered: identity.IsCovered, Canonical: identity.ServedValue, DigestMetadata: identity.MetadataDigest,
		Limits: xpak.DefaultLimits(), Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	srv := httptest.NewServer(gw)
	t.Cleanup(func() { srv.Close(); _ = gw.Close() })
	resp, err := http.Get(srv.URL + "/gentoo-p2pd/Packages")
	if err != nil {
		t.Fatal(err)
	}
	_, idx, err := portagehook.ParseIndex(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var path string
	for _, e := range idx {
		if e.CPV() == jobtest.LayoutCPV {
			path = e.Value("PATH")
		}
	}
	if path == "" {
		t.Fatalf("index does not list %s", jobtest.LayoutCPV)
	}
	// Refused: an error status, or the connection cut short of the
	// promised length (the headers of a streamed answer go out first).
	if resp, err = http.Get(srv.URL + "/gentoo-p2pd/" + path); err == nil {
		body, readErr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if readErr == nil && resp.StatusCode == http.StatusOK && int64(len(body)) == resp.ContentLength {
			t.Fatalf("the gateway served %d bytes of the altered file", len(body))
		}
	}
	// The error is logged before the stream ends; poll all the same.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(logs.String(), "metadata digest") {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("no error naming the metadata digest; log:\n%s", logs.String())
		}
	}
}
