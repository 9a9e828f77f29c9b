package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/fixtures"
	"github.com/gentoo-p2p/gentoo-p2pd/internal/testnet"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// binDir holds the gentoo-p2pd binary built once per test run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gentoo-p2pd-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitTimeout bounds every polling wait; generous because CI runs the
// suite under -race on two shared cores.
const waitTimeout = 90 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("GENTOO_P2PD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond with testnet.WaitFor and fails the test on timeout.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if err := testnet.WaitFor(context.Background(), waitTimeout, what, cond); err != nil {
		tb.Fatal(err)
	}
}

// peerSpec is one daemon of a test network and the fixture sets it built.
type peerSpec struct {
	name      string
	sets      []string
	configure func(*config.Config) // optional policy or mode changes
}

// startNetwork starts one in-process daemon per spec below dir, each
// bootstrapping to the first, and stops them all when the test ends.
func startNetwork(tb testing.TB, dir string, specs []peerSpec) []*testnet.Node {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var nodes []*testnet.Node
	for i, s := range specs {
		for _, set := range s.sets {
			if _, err := fixtures.WritePKGDIR(set, filepath.Join(dir, s.name, "pkgdir")); err != nil {
				tb.Fatal(err)
			}
		}
		var boot []string
		if i > 0 {
			boot = []string{nodes[0].Addr()}
		}
		n, err := testnet.Start(ctx, testnet.NodeOptions{Name: s.name, Dir: dir, Bootstrap: boot, Configure: s.configure, Logger: testLogger()})
		if err != nil {
			tb.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	tb.Cleanup(func() {
		for _, n := range nodes {
			stopNode(tb, n)
		}
	})
	return nodes
}

// stopNode stops n (again: Stop is idempotent) and reports a failure.
func stopNode(tb testing.TB, n *testnet.Node) {
	if err := n.Stop(); err != nil {
		tb.Errorf("stop %s: %v", n.Name, err)
	}
}

// waitCatalog waits until n holds at least want attestations.
func waitCatalog(tb testing.TB, n *testnet.Node, want int) {
	tb.Helper()
	waitFor(tb, n.Name+"'s catalog", func() bool {
		return n.Daemon.API().Status(context.Background()).CatalogAttestations >= want
	})
}

// ownAttestations returns the attestations signed by attester that st holds
// for buildKey, each decoded (and so re-verified) with trust.Decode.
func ownAttestations(tb testing.TB, st *store.Store, buildKey, attester string) []*trust.Signed {
	tb.Helper()
	recs, err := st.AttestationsFor(buildKey)
	if err != nil {
		tb.Fatal(err)
	}
	var out []*trust.Signed
	for _, r := range recs {
		if r.Attester != attester {
			continue
		}
		s, err := trust.Decode(r.Blob)
		if err != nil {
			tb.Fatalf("stored attestation %x by %s does not verify: %v", r.ID, attester, err)
		}
		out = append(out, s)
	}
	return out
}

// foundWith reports whether res lists buildKey with provider among its
// providers and an attestation signed by provider.
func foundWith(res api.FindResult, buildKey, provider string) bool {
	for _, b := range res.Builds {
		if b.BuildKey != keys.Build(buildKey) {
			continue
		}
		listed, attested := false, false
		for _, p := range b.Providers {
			listed = listed || p == provider
		}
		for _, a := range b.Attestations {
			attested = attested || a.Attester == provider
		}
		return listed && attested
	}
	return false
}

// listsProvider reports whether res lists provider for buildKey.
func listsProvider(res api.FindResult, buildKey, provider string) bool {
	for _, b := range res.Builds {
		if b.BuildKey != keys.Build(buildKey) {
			continue
		}
		for _, p := range b.Providers {
			if p == provider {
				return true
			}
		}
	}
	return false
}

// --- the real binary ---

var (
	buildOnce sync.Once
	buildErr  error
)

// gentooP2pd builds ./cmd/gentoo-p2pd from the module root once and returns
// the binary's path.
func gentooP2pd(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(binDir, "gentoo-p2pd")
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go tool is not on PATH: %w", err)
			return
		}
		out, err := exec.Command(goTool, "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/gentoo-p2pd")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/gentoo-p2pd: %w\n%s", err, b)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return bin
}

// procEnv is a clean environment for the binary: a home and XDG dirs of its
// own below root, no config file anywhere, and the network kept on loopback
// (QUIC, AutoNAT, hole punching, relays and the public DHT's rendezvous
// off through GENTOO_P2PD_*), and every attester counted as in a closed
// network (trust.fresh_weight = 100).
func procEnv(root string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=" + filepath.Join(root, "home"),
		"XDG_CONFIG_HOME=" + filepath.Join(root, "config"),
		"XDG_STATE_HOME=" + filepath.Join(root, "state"),
		"XDG_RUNTIME_DIR=" + filepath.Join(root, "run"),
		"GENTOO_P2PD_NETWORK_QUIC=false",
		"GENTOO_P2PD_NETWORK_AUTONAT=false",
		"GENTOO_P2PD_NETWORK_HOLE_PUNCHING=false",
		"GENTOO_P2PD_NETWORK_RELAY_CLIENT=false",
		"GENTOO_P2PD_NETWORK_RENDEZVOUS=false",
		// A closed network of test machines: every attester counts.
		"GENTOO_P2PD_TRUST_FRESH_WEIGHT=100",
	}
	for _, d := range []string{"home", "config", "state", "run"} {
		os.MkdirAll(filepath.Join(root, d), 0o700)
	}
	return env
}

// loopbackFlags keep the daemon on 127.0.0.1 and off mDNS.
var loopbackFlags = []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false", "--gateway-listen", "127.0.0.1:0"}

// process is one running gentoo-p2pd.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// syncBuffer collects a child's stderr for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess runs `gentoo-p2pd daemon args...`; the test's cleanup kills
// it if it is still running.
func startProcess(tb testing.TB, env []string, args ...string) *process {
	tb.Helper()
	bin := gentooP2pd(tb)
	p := &process{stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"daemon"}, args...)...)
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalAndWait sends sig and waits up to bound for the process to exit,
// returning its exit code.
func (p *process) signalAndWait(tb testing.TB, sig syscall.Signal, bound time.Duration) int {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %s: %v", sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(bound):
		tb.Fatalf("daemon did not exit within %s of %s; stderr:\n%s", bound, sig, p.stderr)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		tb.Fatalf("wait: %v", p.err)
	}
	return 0
}

// cli runs a client subcommand of the binary with env and returns stdout,
// stderr and the exit code.
func cli(tb testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gentooP2pd(tb), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		tb.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// waitStatus polls `gentoo-p2pd status --json` until it answers and cond
// holds, failing early if the daemon process dies.
func waitStatus(tb testing.TB, p *process, env []string, what string, cond func(api.Status) bool) api.Status {
	tb.Helper()
	var st api.Status
	var last string
	err := testnet.WaitFor(context.Background(), waitTimeout, what, func() bool {
		if p.exited() {
			return true
		}
		out, errOut, code := cli(tb, env, "status", "--json")
		if code != 0 {
			last = errOut
			return false
		}
		var s api.Status
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			tb.Fatalf("status --json printed no Status: %v\n%s", err, out)
		}
		st = s
		return cond(s)
	})
	if p.exited() {
		tb.Fatalf("daemon exited (%v) while waiting for %s; stderr:\n%s", p.err, what, p.stderr)
	}
	if err != nil {
		tb.Fatalf("%v (last status error: %s); daemon stderr:\n%s", err, last, p.stderr)
	}
	return st
}

// vmRSS reads the resident set size of pid from /proc, in bytes.
func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q: %w", pid, v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS line", pid)
}
