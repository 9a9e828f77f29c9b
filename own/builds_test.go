package own

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/jobtest"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// TestStartAttestsProvidesAndGossips: Start indexes real portage binpkgs,
// signs one attestation per build with the daemon key (describing exactly
// the file), provides build and variant key, and gossips the attestation,
// which a peer on the platform topic verifies and keeps.
func TestStartAttestsProvidesAndGossips(t *testing.T) {
	net := memnet.New()
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	a := newPeer(t, net, filepath.Dir(filepath.Dir(files[jobtest.HelloFile])), peerOptions{})
	b := newPeer(t, net, filepath.Join(t.TempDir(), "none"), peerOptions{})
	a.start(t)

	for _, cpv := range []string{jobtest.HelloCPV, jobtest.LayoutCPV} {
		lp := a.Local(t, cpv)
		file := jobtest.Identify(t, lp.Path).Local
		if lp.FileSHA256 != file.FileSHA256 || lp.ImageDigest != file.ImageDigest || lp.Size != file.Size {
			t.Errorf("%s: indexed record does not describe the file", cpv)
		}
		if lp.BuildKey != file.BuildKey || lp.VariantKey != file.VariantKey || lp.Platform != jobtest.FixturePlatform(t) {
			t.Errorf("%s: keys or platform are not the descriptor's", cpv)
		}
		atts := a.ownAtts(t, keys.Build(lp.BuildKey))
		if len(atts) != 1 {
			t.Fatalf("%s: %d own attestations, want 1", cpv, len(atts))
		}
		at := atts[0].Attestation
		if atts[0].Attester != a.ID || at.CPV != cpv || at.FileSHA256 != lp.FileSHA256 || at.Size != lp.Size ||
			at.Content != (trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}) ||
			at.PieceRoot != lp.PieceRoot || at.VariantKey != keys.Variant(lp.VariantKey) || at.Format != string(xpak.FormatGPKG) {
			t.Errorf("%s: attestation does not describe the file: %+v", cpv, at)
		}
		if at.Index["SLOT"] == "" || at.Index["DESCRIPTION"] == "" {
			t.Errorf("%s: attestation carries no index fields: %v", cpv, at.Index)
		}
		if !a.Providing(t, lp.BuildKey) || !a.Providing(t, lp.VariantKey) || !a.ob.Providing(lp) {
			t.Errorf("%s: build or variant key not provided", cpv)
		}
		provs, err := b.Node.FindProviders(context.Background(), jobtest.CID(t, lp.BuildKey), 10)
		if err != nil || len(provs) != 1 || provs[0].ID != a.ID {
			t.Errorf("%s: peer finds providers %v (%v), want only the builder", cpv, provs, err)
		}
		// Gossip reached the peer, which verified and stored it.
		if got := b.AttestationsBy(t, keys.Build(lp.BuildKey), a.ID); len(got) != 1 {
			t.Errorf("%s: peer holds %d of the builder's attestations, want 1", cpv, len(got))
		}
		v, _, err := a.Book.Verdict(keys.Build(lp.BuildKey))
		if err != nil || v.Decision != trust.Allowed {
			t.Errorf("%s: own verdict %v (%v), want allowed at threshold 1", cpv, v.Decision, err)
		}
	}
	if n := a.Node.Published(); n != 2 {
		t.Errorf("published %d gossip messages, want 2", n)
	}
	if n := a.announces(t); n != 2 {
		t.Errorf("announces_total = %v, want 2", n)
	}
	if a.ob.Note() != "" {
		t.Errorf("Note = %q with a healthy PKGDIR", a.ob.Note())
	}
	if a.ob.Providing(store.LocalPackage{BuildKey: "not-a-cid"}) {
		t.Error("Providing true for a malformed build key")
	}
}

// TestRestartReannouncesWithoutResigning: after a restart (same store, the
// DHT forgot us) Start provides every stored build again but neither
// re-signs nor re-gossips: peers would get equivalent attestations that
// differ only in time.
func TestRestartReannouncesWithoutResigning(t *testing.T) {
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	pkgdir := filepath.Dir(filepath.Dir(files[jobtest.HelloFile]))
	first := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	first.start(t)
	before, err := first.Store.AttestationsBy(first.ID.String())
	if err != nil || len(before) != 2 {
		t.Fatalf("%d own attestations (%v), want 2", len(before), err)
	}

	again := newPeer(t, memnet.New(), pkgdir, peerOptions{st: first.Store, key: first.Key})
	again.start(t)
	after, err := again.Store.AttestationsBy(again.ID.String())
	if err != nil || len(after) != 2 || after[0].ID != before[0].ID || after[1].ID != before[1].ID {
		t.Errorf("restart changed own attestations: %d records (%v)", len(after), err)
	}
	for _, cpv := range []string{jobtest.HelloCPV, jobtest.LayoutCPV} {
		lp := again.Local(t, cpv)
		if !again.Providing(t, lp.BuildKey) || !again.Providing(t, lp.VariantKey) {
			t.Errorf("%s: not provided again after restart", cpv)
		}
	}
	if n := again.Node.Published(); n != 0 {
		t.Errorf("restart gossiped %d messages, want none", n)
	}
}

// TestConsumeModeProvidesNothing: a consume-mode daemon still attests what
// it built (a vote costs it nothing) but serves nothing, so it provides no
// key.
func TestConsumeModeProvidesNothing(t *testing.T) {
	net := memnet.New()
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	c := newPeer(t, net, filepath.Dir(filepath.Dir(files[jobtest.HelloFile])), peerOptions{mode: config.ModeConsume})
	c.start(t)
	for _, cpv := range []string{jobtest.HelloCPV, jobtest.LayoutCPV} {
		lp := c.Local(t, cpv)
		if c.Providing(t, lp.BuildKey) || c.Providing(t, lp.VariantKey) || c.ob.Providing(lp) {
			t.Errorf("%s: consume mode provides a key", cpv)
		}
		if len(c.ownAtts(t, keys.Build(lp.BuildKey))) != 1 {
			t.Errorf("%s: consume mode did not attest its own build", cpv)
		}
	}
	if n := c.announces(t); n != 0 {
		t.Errorf("announces_total = %v in consume mode, want 0", n)
	}
	if n := c.Node.Published(); n != 2 {
		t.Errorf("consume mode gossiped %d attestations, want 2", n)
	}
}

// TestRemovedFileWithdrawnCachedBuildKept: a binpkg that leaves PKGDIR has
// its own attestation deleted and its keys withdrawn, unless the content
// cache still holds a copy of the build (then the build key stays
// provided). The copy a peer collected stays: "I built it and got C"
// remains true.
func TestRemovedFileWithdrawnCachedBuildKept(t *testing.T) {
	net := memnet.New()
	files := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())
	a := newPeer(t, net, filepath.Dir(filepath.Dir(files[jobtest.HelloFile])), peerOptions{})
	b := newPeer(t, net, filepath.Join(t.TempDir(), "none"), peerOptions{})
	a.start(t)
	hello, layout := a.Local(t, jobtest.HelloCPV), a.Local(t, jobtest.LayoutCPV)

	// The cache holds a copy of layout (fetched once, say).
	tmp, err := a.Store.Cache().CreateTemp()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(layout.Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	if _, err := a.Store.Cache().Commit(tmp.Name(), layout.FileSHA256, store.CacheMeta{CPV: jobtest.LayoutCPV, BuildKey: layout.BuildKey}); err != nil {
		t.Fatal(err)
	}

	for _, lp := range []store.LocalPackage{hello, layout} {
		if err := os.Remove(lp.Path); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := a.ob.SyncNow(context.Background())
	if err != nil || len(ch.Removed) != 2 {
		t.Fatalf("SyncNow: %d removed (%v), want 2", len(ch.Removed), err)
	}
	for _, lp := range []store.LocalPackage{hello, layout} {
		if n := len(a.ownAtts(t, keys.Build(lp.BuildKey))); n != 0 {
			t.Errorf("%s: %d own attestations kept for a file that left PKGDIR", lp.CPV, n)
		}
		if n := len(b.AttestationsBy(t, keys.Build(lp.BuildKey), a.ID)); n != 1 {
			t.Errorf("%s: the peer's copy of the attestation is gone (%d)", lp.CPV, n)
		}
	}
	if a.Providing(t, hello.BuildKey) || a.Providing(t, hello.VariantKey) {
		t.Error("hello: keys still provided after its file left PKGDIR")
	}
	if !a.Providing(t, layout.BuildKey) {
		t.Error("layout: build key withdrawn although the cache holds a copy")
	}
	// Nothing changed since: a second sync changes nothing.
	if ch, err := a.ob.SyncNow(context.Background()); err != nil || !ch.Empty() {
		t.Errorf("second SyncNow: %+v, %v", ch, err)
	}
}

// TestNonReproducibleRebuildKeptLocal: a rebuild with the same build key
// but other content (here the backdoored fixture over the honest one) is
// indexed but neither attested nor gossiped: a second content for one
// build key would be equivocation. The first content stays claimed.
func TestNonReproducibleRebuildKeptLocal(t *testing.T) {
	net := memnet.New()
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	a := newPeer(t, net, pkgdir, peerOptions{})
	a.start(t)
	honest := a.Local(t, jobtest.LayoutCPV)
	published := a.Node.Published()

	jobtest.CopyFixture(t, fixtures.Backdoored, jobtest.LayoutFile, honest.Path)
	ch, err := a.ob.SyncNow(context.Background())
	if err != nil || len(ch.Replaced) != 1 {
		t.Fatalf("SyncNow: %+v, %v; want one replaced file", ch, err)
	}
	rebuilt := a.Local(t, jobtest.LayoutCPV)
	if rebuilt.BuildKey != honest.BuildKey || rebuilt.ImageDigest == honest.ImageDigest && rebuilt.MetadataDigest == honest.MetadataDigest {
		t.Fatal("fixture is not a non-reproducible rebuild of the same build key")
	}
	for _, s := range a.ownAtts(t, keys.Build(honest.BuildKey)) {
		if s.Attestation.FileSHA256 == rebuilt.FileSHA256 {
			t.Error("the non-reproducible rebuild was attested")
		}
	}
	if a.Node.Published() != published {
		t.Error("the non-reproducible rebuild was gossiped")
	}
	if a.Providing(t, honest.BuildKey) {
		t.Error("build key still provided: the attested file left PKGDIR and the rebuild is kept local")
	}
	honestContent := trust.ContentID{Image: honest.ImageDigest, Metadata: honest.MetadataDigest}.String()
	if got, err := a.Store.ClaimOwnContent(honest.BuildKey, "other"); err != nil || got != honestContent {
		t.Errorf("claimed content now %q (%v), want the first build's", got, err)
	}
	ex := localExtra{}
	if err := json.Unmarshal(rebuilt.Extra, &ex); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ob.ownAttestation(rebuilt, ex); !errors.Is(err, errNonReproducible) {
		t.Errorf("ownAttestation of the rebuild: %v, want errNonReproducible", err)
	}
	// The hello build was not touched.
	if hello := a.Local(t, jobtest.HelloCPV); !a.Providing(t, hello.BuildKey) || len(a.ownAtts(t, keys.Build(hello.BuildKey))) != 1 {
		t.Error("an unrelated build lost its announcement")
	}
}

// TestNonReproducibleInOneBatch: the honest build and a non-reproducible
// one of the same build key, found in one scan batch on a first start,
// are claimed and attested in one transaction each, and still only the
// first content is attested: the second is equivocation and stays local.
func TestNonReproducibleInOneBatch(t *testing.T) {
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	// Sorted after app-misc/layout-1.0-r1.gpkg.tar, so indexed second.
	jobtest.CopyFixture(t, fixtures.Backdoored, jobtest.LayoutFile, filepath.Join(pkgdir, "app-misc/layout/layout-1.0-r1-7.gpkg.tar"))
	rec := newLogRecorder()
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{logger: slog.New(rec)})
	a.start(t)
	lps, err := a.Store.ListLocal()
	if err != nil || len(lps) != 3 {
		t.Fatalf("indexed %d files (%v), want 3", len(lps), err)
	}
	var honest, evil store.LocalPackage
	for _, lp := range lps {
		switch {
		case lp.CPV != jobtest.LayoutCPV:
		case strings.HasSuffix(lp.Path, jobtest.LayoutFile):
			honest = lp
		default:
			evil = lp
		}
	}
	if evil.BuildKey != honest.BuildKey || evil.ImageDigest == honest.ImageDigest && evil.MetadataDigest == honest.MetadataDigest {
		t.Fatal("fixtures are not two contents of one build key")
	}
	atts := a.ownAtts(t, keys.Build(honest.BuildKey))
	if len(atts) != 1 || atts[0].Attestation.FileSHA256 != honest.FileSHA256 {
		t.Fatalf("%d own attestations of the build key, want only the honest file's", len(atts))
	}
	if len(rec.matching("non-reproducible")) != 1 {
		t.Errorf("the second content was not reported as non-reproducible: %v", rec.matching("attest"))
	}
}

// TestDownloadedGPKGNotAttested: a GPKG signed by the gateway key (what
// portage writes to PKGDIR when it installs from the gateway) is indexed
// but never attested, provided or gossiped; the same file counts as built
// here when the key is not in the downloaded keyring (a user's own
// binpkg-signing key).
func TestDownloadedGPKGNotAttested(t *testing.T) {
	gw, err := portagehook.LoadOrCreateSigningKey(filepath.Join(t.TempDir(), "gw.asc"), "gentoo-p2pd gateway")
	if err != nil {
		t.Fatal(err)
	}
	src := jobtest.WriteSet(t, fixtures.ReproGPKG1, t.TempDir())[jobtest.HelloFile]
	pkgdir := t.TempDir()
	dst := filepath.Join(pkgdir, "app-misc", "hello", "hello-1.0-1.gpkg.tar")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := portagehook.Repack(src, dst, portagehook.RepackOptions{
		BuildID: 1, Signer: portagehook.NewSigner(gw, time.Now()), Covered: identity.IsCovered,
		Limits: xpak.DefaultLimits(),
	}); err != nil {
		t.Fatal(err)
	}
	if err := trust.VerifyGPKGSignatures(dst, openpgp.EntityList{gw}); err != nil {
		t.Fatalf("re-packed fixture does not verify against the gateway key: %v", err)
	}

	net := memnet.New()
	d := newPeer(t, net, pkgdir, peerOptions{downloaded: openpgp.EntityList{gw}})
	d.start(t)
	lp := d.Local(t, jobtest.HelloCPV)
	if n := len(d.ownAtts(t, keys.Build(lp.BuildKey))); n != 0 {
		t.Errorf("%d own attestations of a downloaded package", n)
	}
	if d.Providing(t, lp.BuildKey) || d.Providing(t, lp.VariantKey) || d.Node.Published() != 0 {
		t.Error("a downloaded package was provided or gossiped")
	}
	var ex localExtra
	if err := json.Unmarshal(lp.Extra, &ex); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ob.ownAttestation(lp, ex); !errors.Is(err, errDownloaded) {
		t.Errorf("ownAttestation: %v, want errDownloaded", err)
	}
	// A restart does not attest it either.
	if err := d.ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(d.ownAtts(t, keys.Build(lp.BuildKey))); n != 0 {
		t.Errorf("restart attested a downloaded package (%d)", n)
	}

	// Signed with a key that marks no download: a local build.
	own := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	own.start(t)
	if lp := own.Local(t, jobtest.HelloCPV); len(own.ownAtts(t, keys.Build(lp.BuildKey))) != 1 || !own.Providing(t, lp.BuildKey) {
		t.Error("a GPKG signed by a key outside the keyring was not attested as built here")
	}
}

// TestAnnounce: a binpkg named by its path inside PKGDIR, or by CPV, is
// indexed and announced at once; paths outside PKGDIR, missing files,
// unknown CPVs and files that are not binpkgs are refused with a reason.
func TestAnnounce(t *testing.T) {
	ctx := context.Background()
	pkgdir := t.TempDir()
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	a.start(t) // empty PKGDIR

	hello := filepath.Join(pkgdir, jobtest.HelloFile)
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, hello)
	lp, err := a.ob.Announce(ctx, hello)
	if err != nil {
		t.Fatalf("Announce by path: %v", err)
	}
	if lp.CPV != jobtest.HelloCPV || lp.Path != hello || !a.ob.Providing(lp) || len(a.ownAtts(t, keys.Build(lp.BuildKey))) != 1 {
		t.Errorf("Announce by path: %+v not attested and provided", lp)
	}

	layout := filepath.Join(pkgdir, jobtest.LayoutFile)
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.LayoutFile, layout)
	lp, err = a.ob.Announce(ctx, jobtest.LayoutCPV)
	if err != nil {
		t.Fatalf("Announce by CPV: %v", err)
	}
	if lp.Path != layout || !a.ob.Providing(lp) {
		t.Errorf("Announce by CPV: %+v", lp)
	}
	// Announcing again is idempotent.
	if again, err := a.ob.Announce(ctx, jobtest.HelloCPV); err != nil || again.FileSHA256 != a.Local(t, jobtest.HelloCPV).FileSHA256 {
		t.Errorf("Announce of an announced CPV: %v", err)
	}

	outside := filepath.Join(t.TempDir(), jobtest.HelloFile)
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, outside)
	broken := filepath.Join(pkgdir, "app-misc", "broken-1.0.gpkg.tar")
	if err := os.WriteFile(broken, []byte("not a tar archive, whatever its name says"), 0o644); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(pkgdir, "app-misc", "notes.txt")
	if err := os.WriteFile(notes, []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ arg, want string }{
		{"", "give the path"},
		{outside, "is not inside PKGDIR"},
		{filepath.Join(pkgdir, "..", filepath.Base(pkgdir)+"-sibling", jobtest.HelloFile), "is not inside PKGDIR"},
		{filepath.Join(pkgdir, "app-misc", "gone-1.0.gpkg.tar"), "no such file"},
		{"app-misc/gone-1.0", "no binpkg of app-misc/gone-1.0"},
		{broken, broken},
		{notes, "was not indexed"},
	} {
		if _, err := a.ob.Announce(ctx, tc.arg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Announce(%q) = %v, want an error containing %q", tc.arg, err, tc.want)
		}
	}
}

// TestRejectedBinpkgLoggedOnce: a binpkg that cannot be indexed is logged
// once, not by the scanner and again by the own-builds job, and not again
// by later syncs while it stays as it is.
func TestRejectedBinpkgLoggedOnce(t *testing.T) {
	ctx := context.Background()
	pkgdir := t.TempDir()
	rec := newLogRecorder()
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{logger: slog.New(rec)})
	a.start(t)
	broken := filepath.Join(pkgdir, "app-misc", "broken-1.0.gpkg.tar")
	if err := os.MkdirAll(filepath.Dir(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, []byte("not a tar archive, whatever its name says"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := a.ob.SyncNow(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := rec.matching(broken); len(got) != 1 {
		t.Errorf("rejected binpkg logged %d times, want once:\n%s", len(got), strings.Join(got, "\n"))
	}
}

// TestAnnounceRelativePath: a relative path names a file from the working
// directory, even one that also reads as category/package-version.
func TestAnnounceRelativePath(t *testing.T) {
	pkgdir := t.TempDir()
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, filepath.Join(pkgdir, jobtest.HelloFile))
	t.Chdir(filepath.Join(pkgdir, "app-misc"))
	lp, err := a.ob.Announce(context.Background(), "hello-1.0.gpkg.tar")
	if err != nil || lp.CPV != jobtest.HelloCPV {
		t.Fatalf("Announce of a relative path: %+v, %v", lp, err)
	}
	t.Chdir(pkgdir)
	if !looksLikeCPV("app-misc/hello-1.0") || looksLikeCPV("app-misc/hello-1.0.gpkg.tar") {
		t.Error("looksLikeCPV mistakes a CPV and an existing file")
	}
	for _, s := range []string{"hello", "/abs/x", "a/b/c", "./x", "../x", "app-misc/"} {
		if looksLikeCPV(s) {
			t.Errorf("looksLikeCPV(%q) = true", s)
		}
	}
}

// TestWatchFollowsPKGDIR: Watch's first scan indexes and announces what
// PKGDIR holds, and Watch ends without error when its context does.
func TestWatchFollowsPKGDIR(t *testing.T) {
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ob.Watch(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lps, _ := a.Store.ListLocal()
		n := 0
		for _, lp := range lps {
			if a.ob.Providing(lp) {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch announced %d of 2 builds", n)
		}
		time.Sleep(5 * time.Millisecond) // polling the outcome, not waiting for it
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch after cancel: %v", err)
	}
}

// TestMissingPKGDIR: a missing PKGDIR is a note for status, not an error;
// once portage creates it, the next sync clears the note and announces.
func TestMissingPKGDIR(t *testing.T) {
	pkgdir := filepath.Join(t.TempDir(), "binpkgs")
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	a.start(t)
	if !strings.Contains(a.ob.Note(), "missing") {
		t.Errorf("Note = %q, want it to say PKGDIR is missing", a.ob.Note())
	}
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, filepath.Join(pkgdir, jobtest.HelloFile))
	if _, err := a.ob.SyncNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.ob.Note() != "" || !a.ob.Providing(a.Local(t, jobtest.HelloCPV)) {
		t.Errorf("after PKGDIR appeared: note %q, hello provided %v", a.ob.Note(), a.ob.Providing(a.Local(t, jobtest.HelloCPV)))
	}
}

// TestStartCancelled: a scan cut short is an error from Start.
func TestStartCancelled(t *testing.T) {
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.ob.Start(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context: %v", err)
	}
}

// TestReconcileKeepsOnStoreError: a store that cannot be read never reads
// as "file gone": nothing is withdrawn.
func TestReconcileKeepsOnStoreError(t *testing.T) {
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	a.start(t)
	hello := a.Local(t, jobtest.HelloCPV)
	if err := a.Store.Close(); err != nil {
		t.Fatal(err)
	}
	a.ob.reconcileOwn(map[keys.Build]keys.Variant{keys.Build(hello.BuildKey): keys.Variant(hello.VariantKey)})
	if !a.Providing(t, hello.BuildKey) || !a.Providing(t, hello.VariantKey) {
		t.Error("a store error withdrew a build")
	}
	if !a.ob.cachedBuild(keys.Build(hello.BuildKey)) || !a.ob.ownsVariant(keys.Variant(hello.VariantKey)) {
		t.Error("unknown (store error) must count as held")
	}
}

// TestAttestLocalErrors: a stored record that cannot be re-signed, and a
// network that refuses the announcement, are errors, not silent successes.
func TestAttestLocalErrors(t *testing.T) {
	pkgdir := t.TempDir()
	jobtest.WriteSet(t, fixtures.ReproGPKG1, pkgdir)
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	a.start(t)
	hello := a.Local(t, jobtest.HelloCPV)
	ctx := context.Background()

	bad := hello
	bad.Extra = []byte("{")
	if err := a.ob.attestLocal(ctx, bad, false); err == nil {
		t.Error("attestLocal accepted a record without its extra")
	}
	a.Node.SetOnline(false)
	if err := a.ob.attestLocal(ctx, hello, false); err == nil || !strings.Contains(err.Error(), "provide") {
		t.Errorf("attestLocal offline: %v, want a provide error", err)
	}
	a.Node.SetOnline(true)
	bad = hello
	bad.BuildKey = "not-a-cid"
	if err := a.ob.attestLocal(ctx, bad, false); err == nil {
		t.Error("attestLocal accepted a malformed build key")
	}
}

// TestReplacedByAnotherBuildWithdrawsTheOld: portage without
// binpkg-multi-instance rewrites CAT/PF.gpkg.tar in place when the package
// is rebuilt with other USE flags, a new build key. The old build's file
// is gone: its own attestation is deleted and its build key withdrawn;
// the new build is attested and provided.
func TestReplacedByAnotherBuildWithdrawsTheOld(t *testing.T) {
	pkgdir := t.TempDir()
	path := filepath.Join(pkgdir, jobtest.HelloFile)
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, path) // USE="bar"
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	a.start(t)
	old := a.Local(t, jobtest.HelloCPV)

	jobtest.CopyFixture(t, fixtures.MultiInstance, "app-misc/hello/hello-1.0-2.gpkg.tar", path) // USE="bar foo"
	ch, err := a.ob.SyncNow(context.Background())
	if err != nil || len(ch.Replaced) != 1 {
		t.Fatalf("SyncNow: %+v, %v; want one replaced file", ch, err)
	}
	cur := a.Local(t, jobtest.HelloCPV)
	if cur.BuildKey == old.BuildKey {
		t.Fatal("fixture is not another build of hello")
	}
	if !a.Providing(t, cur.BuildKey) || len(a.ownAtts(t, keys.Build(cur.BuildKey))) != 1 {
		t.Error("the new build is not attested and provided")
	}
	if n := len(a.ownAtts(t, keys.Build(old.BuildKey))); n != 0 {
		t.Errorf("%d own attestations kept for the overwritten build", n)
	}
	if a.Providing(t, old.BuildKey) {
		t.Error("the overwritten build's key is still provided")
	}
}

// TestAnnounceThroughSymlinkedPKGDIR: PKGDIR is often a symlink to a
// bigger disk; a binpkg named by its path on that disk is inside PKGDIR
// and is announced under the name the scanner records.
func TestAnnounceThroughSymlinkedPKGDIR(t *testing.T) {
	disk := t.TempDir()
	pkgdir := filepath.Join(t.TempDir(), "binpkgs")
	if err := os.Symlink(disk, pkgdir); err != nil {
		t.Fatal(err)
	}
	a := newPeer(t, memnet.New(), pkgdir, peerOptions{})
	jobtest.CopyFixture(t, fixtures.ReproGPKG1, jobtest.HelloFile, filepath.Join(disk, jobtest.HelloFile))
	for _, path := range []string{filepath.Join(disk, jobtest.HelloFile), filepath.Join(pkgdir, jobtest.HelloFile)} {
		lp, err := a.ob.Announce(context.Background(), path)
		if err != nil {
			t.Fatalf("Announce(%s): %v", path, err)
		}
		if lp.Path != filepath.Join(pkgdir, jobtest.HelloFile) || !a.ob.Providing(lp) {
			t.Errorf("Announce(%s) = %s, provided %v", path, lp.Path, a.ob.Providing(lp))
		}
	}
	if _, err := a.ob.Announce(context.Background(), filepath.Join(filepath.Dir(disk), "elsewhere", jobtest.HelloFile)); err == nil || !strings.Contains(err.Error(), "not inside PKGDIR") {
		t.Errorf("a path outside both: %v", err)
	}
}
