package transfer

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/pieces"
)

// Environment of the child process of TestKilledFetchResumes.
const (
	envKillChild = "TRANSFER_TEST_KILL_CHILD"
	envKillAddr  = "TRANSFER_TEST_KILL_ADDR"
	envKillDir   = "TRANSFER_TEST_KILL_DIR"
	envKillWant  = "TRANSFER_TEST_KILL_WANT" // hex sha, hex root, size
)

// TestKilledFetchResumes runs a fetch in a child process, SIGKILLs it once
// its bitfield marks a few pieces, and resumes in this process: every
// marked piece must verify from disk (crash consistency of part file and
// bitfield) and must not be downloaded again.
func TestKilledFetchResumes(t *testing.T) {
	if os.Getenv(envKillChild) == "1" {
		killChild(t)
		return
	}
	tf := makeFile(t, 32*pieces.Size+321, 30)
	// Slow provider, so the child is surely mid-transfer when killed.
	slow := newProvider(t, newMemSource(tf), ServerOptions{Enabled: true, PerPeerRate: 2 << 20})
	dir := t.TempDir()
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: slow.h.ID(), Addrs: slow.h.Addrs()})
	if err != nil || len(addrs) == 0 {
		t.Fatalf("provider address: %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledFetchResumes$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envKillChild+"=1",
		envKillAddr+"="+addrs[0].String(),
		envKillDir+"="+dir,
		fmt.Sprintf("%s=%s %s %d", envKillWant, hex.EncodeToString(tf.want.SHA256[:]), hex.EncodeToString(tf.want.PieceRoot[:]), tf.want.Size),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	_, bitsPath := partPaths(dir, tf.want.SHA256)
	const k = 4
	deadline := time.Now().Add(45 * time.Second)
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for len(markedPieces(bitsPath, len(tf.leaves))) < k {
		select {
		case err := <-exited:
			t.Fatalf("child ended before being killed: %v", err)
		case <-poll.C:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("child never marked %d pieces", k)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited

	marked := markedPieces(bitsPath, len(tf.leaves))
	if len(marked) < k || len(marked) == len(tf.leaves) {
		t.Fatalf("%d of %d pieces marked after the kill", len(marked), len(tf.leaves))
	}
	src := newMemSource(tf)
	fast := newProvider(t, src, ServerOptions{Enabled: true})
	res, err := Fetch(testCtx(t), newHost(t), tf.want, []peer.AddrInfo{addrInfo(fast.h)}, FetchOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, dir, res, tf)
	t.Logf("killed with %d of %d pieces marked; resume reused %d, fetched %d", len(marked), len(tf.leaves), res.PiecesReused, res.PiecesFetched)
	if res.PiecesReused != len(marked) {
		t.Fatalf("reused %d pieces, %d were marked: a marked piece failed verification after the kill", res.PiecesReused, len(marked))
	}
	for _, i := range marked {
		if b := src.bytesOfPiece(i); b != 0 {
			t.Fatalf("marked piece %d downloaded again (%d bytes)", i, b)
		}
	}
}

// killChild is the child side: fetch until killed, syncing often.
func killChild(t *testing.T) {
	ai, err := peer.AddrInfoFromString(os.Getenv(envKillAddr))
	if err != nil {
		t.Fatal(err)
	}
	var shaHex, rootHex string
	var want Want
	if _, err := fmt.Sscan(os.Getenv(envKillWant), &shaHex, &rootHex, &want.Size); err != nil {
		t.Fatal(err)
	}
	sha, err1 := hex.DecodeString(shaHex)
	root, err2 := hex.DecodeString(rootHex)
	if err1 != nil || err2 != nil {
		t.Fatal("bad want in environment")
	}
	copy(want.SHA256[:], sha)
	copy(want.PieceRoot[:], root)
	want.PieceSize = pieces.Size
	_, err = Fetch(context.Background(), newHost(t), want, []peer.AddrInfo{*ai}, FetchOptions{
		Dir: os.Getenv(envKillDir), SyncInterval: 20 * time.Millisecond,
	})
	t.Logf("child fetch returned without being killed: %v", err)
}

// markedPieces reads a bitfield file; unreadable or short means none.
func markedPieces(bitsPath string, n int) []int {
	b, err := os.ReadFile(bitsPath)
	if err != nil || len(b) < bitsHeaderLen+(n+7)/8 {
		return nil
	}
	var out []int
	for i := 0; i < n; i++ {
		if b[bitsHeaderLen+i/8]&(1<<(i%8)) != 0 {
			out = append(out, i)
		}
	}
	return out
}
