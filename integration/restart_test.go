package integration

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// indexSnapshot is what a restart must not change: each indexed file's
// digest and the time it was read.
func indexSnapshot(t *testing.T, st *store.Store) map[string]store.LocalPackage {
	t.Helper()
	lps, err := st.ListLocal()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.LocalPackage{}
	for _, lp := range lps {
		out[lp.Path] = lp
	}
	return out
}

// sameIndex fails unless after holds exactly before's files, none re-read
// (IndexedAt is set only when a file is hashed).
func sameIndex(t *testing.T, who string, before, after map[string]store.LocalPackage) {
	t.Helper()
	if len(after) != len(before) {
		t.Errorf("%s: %d packages indexed after restart, %d before", who, len(after), len(before))
	}
	for path, b := range before {
		a, ok := after[path]
		switch {
		case !ok:
			t.Errorf("%s: %s left the index across the restart", who, path)
		case !a.IndexedAt.Equal(b.IndexedAt):
			t.Errorf("%s: %s was re-hashed at restart (indexed %s, before %s)", who, path, a.IndexedAt, b.IndexedAt)
		case a.FileSHA256 != b.FileSHA256 || a.BuildKey != b.BuildKey:
			t.Errorf("%s: %s changed identity across the restart", who, path)
		}
	}
}

// restartNode stops n and starts it again on the same state dir and
// PKGDIR, bootstrapping to boot (its listen port changes).
func restartNode(t *testing.T, n *testnet.Node, boot *testnet.Node) *testnet.Node {
	t.Helper()
	stopNode(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	// testnet puts a node's files in <Dir>/<Name>/; StateDir is .../state.
	dir := filepath.Dir(filepath.Dir(n.Config.StateDir))
	m, err := testnet.Start(ctx, testnet.NodeOptions{Name: n.Name, Dir: dir, Bootstrap: []string{boot.Addr()}, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(t, m) })
	return m
}

// testRestart restarts bob (two builds) and alice (whose hello was
// withdrawn) on their state dirs. Both keep their peer id and index without
// re-hashing a file, re-announce what they hold, and alice does not take
// back her withdrawn attestation when she pulls the catalogs that still
// carry it.
func testRestart(t *testing.T, alice, bob, carol, erin *testnet.Node) {
	ctx := context.Background()
	aliceID, bobID := alice.Daemon.ID(), bob.Daemon.ID()
	aliceIdx, bobIdx := indexSnapshot(t, alice.Daemon.Store()), indexSnapshot(t, bob.Daemon.Store())
	bobKeys := bob.Daemon.API().Status(ctx).KeysProvided
	hello := helloKey(t, erin)

	// A marker only carol's catalog carries (never gossiped): once the
	// restarted alice holds it, she has pulled carol's catalog, which also
	// holds alice's withdrawn hello attestation.
	marker := markerAttestation(t, carol)

	alice = restartNode(t, alice, carol)
	bob = restartNode(t, bob, carol)

	if alice.Daemon.ID() != aliceID || bob.Daemon.ID() != bobID {
		t.Fatalf("peer ids changed across restart: alice %s→%s, bob %s→%s", aliceID, alice.Daemon.ID(), bobID, bob.Daemon.ID())
	}
	sameIndex(t, "alice", aliceIdx, indexSnapshot(t, alice.Daemon.Store()))
	sameIndex(t, "bob", bobIdx, indexSnapshot(t, bob.Daemon.Store()))

	// Announcements come back: the keys are provided again and erin finds
	// bob (and alice's layout) with their attestations.
	for _, lp := range bobIdx {
		for _, k := range []string{lp.BuildKey, lp.VariantKey} {
			if !bob.Daemon.Node().Providing(cid.MustParse(k)) {
				t.Errorf("restarted bob does not provide %s of %s", k, lp.CPV)
			}
		}
	}
	if got := bob.Daemon.API().Status(ctx).KeysProvided; got != bobKeys {
		t.Errorf("bob provides %d keys after restart, %d before", got, bobKeys)
	}
	// Erin is not told the restarted nodes' new ports: she learns them
	// from the DHT.
	for _, lp := range bobIdx {
		waitFor(t, "erin finds the restarted bob's "+lp.CPV, func() bool {
			res, err := erin.Daemon.API().Find(ctx, lp.BuildKey)
			return err == nil && foundWith(res, lp.BuildKey, bobID.String())
		})
	}
	for _, lp := range aliceIdx {
		waitFor(t, "erin finds the restarted alice's "+lp.CPV, func() bool {
			res, err := erin.Daemon.API().Find(ctx, lp.BuildKey)
			return err == nil && foundWith(res, lp.BuildKey, aliceID.String())
		})
	}

	// The withdrawal survives the restart.
	waitFor(t, "restarted alice pulls carol's catalog", func() bool {
		ok, _ := alice.Daemon.Store().HasAttestation(marker.ID())
		return ok
	})
	if own := ownAttestations(t, alice.Daemon.Store(), hello, aliceID.String()); len(own) != 0 {
		t.Errorf("restarted alice took her withdrawn hello attestation back from the catalog (%d)", len(own))
	}
	if alice.Daemon.Node().Providing(cid.MustParse(hello)) {
		t.Error("restarted alice provides the withdrawn hello again")
	}
	res, err := erin.Daemon.API().Find(ctx, hello)
	if err != nil {
		t.Fatal(err)
	}
	if listsProvider(res, hello, aliceID.String()) {
		t.Errorf("after alice's restart erin lists her as holding the withdrawn hello: %+v", res)
	}
}

// helloKey is the build key of the reproducible hello-1.0 builds.
func helloKey(t *testing.T, n *testnet.Node) string {
	t.Helper()
	recs, err := n.Daemon.Store().AttestationsByCPV("app-misc/hello-1.0")
	if err != nil || len(recs) == 0 {
		t.Fatalf("no hello attestations at %s: %v", n.Name, err)
	}
	counts := map[string]int{}
	best := ""
	for _, r := range recs {
		counts[r.BuildKey]++
		if counts[r.BuildKey] > counts[best] {
			best = r.BuildKey
		}
	}
	return best
}

// markerAttestation stores in n's catalog a valid attestation by a fresh
// key (a peer that has since gone) and returns it.
func markerAttestation(t *testing.T, n *testnet.Node) *trust.Signed {
	t.Helper()
	lp := localByName(t, n, "app-misc/layout-1.0-r1")
	own := ownAttestations(t, n.Daemon.Store(), lp.BuildKey, n.Daemon.ID().String())
	if len(own) != 1 {
		t.Fatalf("%s holds %d own layout attestations", n.Name, len(own))
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := own[0].Attestation
	a.Time = time.Now().UTC()
	s, err := trust.Sign(a, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Daemon.Store().PutAttestation(store.AttestationRecord{
		ID: s.ID(), BuildKey: string(a.BuildKey), VariantKey: string(a.VariantKey), CPV: a.CPV, Platform: a.Platform,
		Attester: s.Attester.String(), Content: a.Content.String(), Blob: s.Marshal(),
		ReceivedAt: time.Now().UTC(), From: s.Attester.String(), Time: a.Time.Unix(),
	}); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDaemonProcessNoConfig runs the real binary with no config file, no
// portage and a missing PKGDIR: it comes up, says PKGDIR is missing, and
// exits 0 on SIGTERM. Before that, `status` without a daemon fails with a
// message that says what to do.
func TestDaemonProcessNoConfig(t *testing.T) {
	root := t.TempDir()
	env := procEnv(root)
	socket := filepath.Join(root, "run", "gentoo-p2pd.sock")

	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		_, errOut, code := cli(t, env, args...)
		if code == 0 {
			t.Fatalf("%v with no daemon exited 0", args)
		}
		for _, want := range []string{"not running", socket, "gentoo-p2pd daemon"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("%v with no daemon: message lacks %q:\n%s", args, want, errOut)
			}
		}
	}

	nope := filepath.Join(root, "nope")
	p := startProcess(t, env, append(loopbackFlags, "--pkgdir", nope)...)
	// The API answers while PKGDIR is still being looked at; wait for the
	// verdict on it and for the gateway.
	st := waitStatus(t, p, env, "status reports on PKGDIR and the gateway", func(s api.Status) bool {
		return s.PKGDIRNote != "" && s.GatewayURL != ""
	})
	if st.PKGDIR != nope || !strings.Contains(st.PKGDIRNote, "missing") {
		t.Errorf("status: PKGDIR %q note %q, want %q noted missing", st.PKGDIR, st.PKGDIRNote, nope)
	}
	if st.Socket != socket {
		t.Errorf("socket %q, want the XDG_RUNTIME_DIR default %q", st.Socket, socket)
	}
	if _, err := os.Stat(filepath.Join(root, "state", "gentoo-p2pd", "identity.key")); err != nil {
		t.Errorf("identity key not in the XDG_STATE_HOME default state dir: %v", err)
	}
	for _, a := range st.Addrs {
		if !strings.HasPrefix(a, "/ip4/127.0.0.1/") {
			t.Errorf("daemon listens beyond loopback: %s", a)
		}
	}
	if !strings.HasPrefix(st.GatewayURL, "http://127.0.0.1:") {
		t.Errorf("gateway %q, want loopback", st.GatewayURL)
	}
	text, _, code := cli(t, env, "status")
	if code != 0 || !strings.Contains(text, "missing") {
		t.Errorf("status text (exit %d) does not mention the missing PKGDIR:\n%s", code, text)
	}
	if code := p.signalAndWait(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM; stderr:\n%s", code, p.stderr)
	}
}

// TestDaemonProcessKillRestart SIGKILLs the real binary sharing a fixture
// PKGDIR and starts it again: same peer id, the packages still indexed and
// not re-hashed, and the dead daemon's socket replaced by a live one.
func TestDaemonProcessKillRestart(t *testing.T) {
	root := t.TempDir()
	env := procEnv(root)
	socket := filepath.Join(root, "run", "gentoo-p2pd.sock")
	stateDir := filepath.Join(root, "state", "gentoo-p2pd")
	pkgdir := filepath.Join(root, "binpkgs")
	if _, err := fixtures.WritePKGDIR(fixtures.ReproGPKG1, pkgdir); err != nil {
		t.Fatal(err)
	}
	args := append(loopbackFlags, "--pkgdir", pkgdir)

	p := startProcess(t, env, args...)
	first := waitStatus(t, p, env, "both packages shared", func(s api.Status) bool {
		return s.PackagesShared == 2 && s.KeysProvided == 4
	})
	if code := p.signalAndWait(t, syscall.SIGKILL, 30*time.Second); code != -1 {
		t.Fatalf("exit status %d after SIGKILL, want killed", code)
	}
	if fi, err := os.Lstat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the killed daemon should leave its socket behind: %v", err)
	}
	before := readIndex(t, stateDir)
	if len(before) != 2 {
		t.Fatalf("store of the killed daemon indexes %d packages, want 2", len(before))
	}

	p = startProcess(t, env, args...)
	second := waitStatus(t, p, env, "restarted daemon shares both packages", func(s api.Status) bool {
		return s.PackagesShared == 2 && s.KeysProvided == 4
	})
	if second.PeerID != first.PeerID {
		t.Errorf("peer id changed across the restart: %s → %s", first.PeerID, second.PeerID)
	}
	if code := p.signalAndWait(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM; stderr:\n%s", code, p.stderr)
	}
	sameIndex(t, "restarted process", before, readIndex(t, stateDir))
}

// readIndex opens a stopped daemon's store and returns its index.
func readIndex(t *testing.T, stateDir string) map[string]store.LocalPackage {
	t.Helper()
	st, err := store.Open(stateDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return indexSnapshot(t, st)
}
