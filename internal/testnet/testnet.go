// Package testnet starts real gentoo-p2pd daemons in one process on
// loopback — each with its own state dir, PKGDIR, libp2p host, API socket
// and gateway — for the demo and the integration tests. Nothing here fakes
// the network: the daemons find each other through the DHT on 127.0.0.1.
package testnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/builder"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
	"github.com/gentoo-p2p/gentoo-p2pd/daemon"
)

// Platform settings of the embedded fixtures (portage's ResolverPlayground
// defaults): a daemon lists a build for portage only when its own platform
// matches the build's.
var FixturePortage = config.PortageConfig{
	CHOST:    "x86_64-pc-linux-gnu",
	CFLAGS:   "-O2 -pipe",
	CXXFLAGS: "-O2 -pipe",
	LDFLAGS:  "-Wl,-O1 -Wl,--as-needed",
	ARCH:     "amd64",
}

// NodeOptions configure one daemon.
type NodeOptions struct {
	Name      string   // for logs and dirs
	Dir       string   // parent dir: state, PKGDIR and socket go below it
	Bootstrap []string // multiaddrs with /p2p/
	// Rendezvous, when set, are the nodes of a stand-in public DHT
	// (internal/publicdht) the daemon finds others through; unset keeps
	// the rendezvous off, as the public DHT is not on loopback.
	Rendezvous []string
	Mode       config.Mode
	Threshold  int
	// Configure, when set, edits the config last (signers, caps, …).
	Configure func(*config.Config)
	Logger    *slog.Logger
	// VDB is the installed-package database the daemon reads (what fits
	// the machine, gateway.prefetch = installed); empty makes one holding
	// glibc (InstallGlibc), so the fixtures fit.
	VDB string
	// Demand is what the daemon's builder builds (build.donate).
	Demand builder.Demand
}

// InstallGlibc records sys-libs/glibc in the vdb at vdb, with the
// sonames portage would record for it (PROVIDES): a test machine's
// installed system, whatever the host is.
func InstallGlibc(vdb string) error {
	dir := filepath.Join(vdb, "sys-libs", "glibc-2.36-r7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, v := range map[string]string{"SLOT": "2.2\n", "PROVIDES": jobtestGlibcProvides + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// jobtestGlibcProvides is what glibc provides on a test machine.
const jobtestGlibcProvides = "x86_64: ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2"

// Node is one running daemon.
type Node struct {
	Name   string
	Daemon *daemon.Daemon
	Config *config.Config
	PKGDIR string

	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
	stopErr  error
}

// Config returns a loopback-only configuration below dir: TCP on
// 127.0.0.1, no mDNS (it multicasts beyond loopback), no rendezvous unless
// o.Rendezvous names a stand-in public DHT, no NAT traversal, DHT
// server mode (a LAN of peers never looks public to AutoNAT).
func Config(dir string, o NodeOptions) *config.Config {
	cfg := config.Defaults()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.Cache.Dir = filepath.Join(cfg.StateDir, "cache")
	cfg.API.Socket = filepath.Join(dir, "api.sock")
	cfg.Portage = FixturePortage
	cfg.Portage.PkgDir = filepath.Join(dir, "pkgdir")
	cfg.Portage.Repo = ""
	cfg.Network.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Network.Bootstrap = o.Bootstrap
	cfg.Network.MDNS = false
	cfg.Network.Rendezvous = len(o.Rendezvous) > 0
	cfg.Network.RendezvousPeers = o.Rendezvous
	cfg.Network.QUIC = false
	cfg.Network.AutoNAT = false
	cfg.Network.HolePunching = false
	cfg.Network.RelayClient = false
	cfg.Network.DHTMode = "server"
	cfg.Network.ConnLow, cfg.Network.ConnHigh = 16, 32
	cfg.Gateway.Listen = "127.0.0.1:0"
	cfg.Log.Level = "debug"
	// A test network is a closed network of one's own machines: every
	// attester counts. Tests of standing set it back to 0 (Configure).
	cfg.Trust.FreshWeight = 100
	if o.Mode != "" {
		cfg.Mode = o.Mode
	}
	if o.Threshold > 0 {
		cfg.Trust.Threshold = o.Threshold
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	return cfg
}

// Start runs a daemon until Stop, and returns once it is ready.
func Start(ctx context.Context, o NodeOptions) (*Node, error) {
	dir := filepath.Join(o.Dir, o.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := Config(dir, o)
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	vdb := o.VDB
	if vdb == "" {
		vdb = filepath.Join(dir, "vdb")
		if err := InstallGlibc(vdb); err != nil {
			return nil, err
		}
	}
	d, err := daemon.New(daemon.Options{Config: cfg, Logger: log.With("node", o.Name), VDB: vdb, Demand: o.Demand})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Name, err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	n := &Node{Name: o.Name, Daemon: d, Config: cfg, PKGDIR: cfg.Portage.PkgDir, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- d.Run(rctx) }()
	select {
	case <-d.Ready():
		return n, nil
	case err := <-n.done:
		cancel()
		return nil, fmt.Errorf("%s: %w", o.Name, err)
	case <-ctx.Done():
		cancel()
		if err := <-n.done; err != nil && !errors.Is(err, context.Canceled) {
			return nil, fmt.Errorf("%s: %w (stopping after %w)", o.Name, err, ctx.Err())
		}
		return nil, ctx.Err()
	}
}

// Addr is a dialable multiaddr of the node, with its peer id.
func (n *Node) Addr() string {
	addrs := n.Daemon.Node().Addrs()
	for _, a := range addrs {
		return a.String()
	}
	return ""
}

// Stop shuts the daemon down and waits for Run to return. Calling it again
// returns the first result at once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if !errors.Is(err, context.Canceled) {
				n.stopErr = err
			}
		case <-time.After(30 * time.Second):
			n.stopErr = fmt.Errorf("%s: daemon did not stop within 30s", n.Name)
		}
	})
	return n.stopErr
}

// WaitFor polls cond every few milliseconds until it holds or timeout
// passes; it never sleeps longer than one poll interval past the event.
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	interval := 5 * time.Millisecond
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
		if interval < 100*time.Millisecond {
			interval *= 2
		}
	}
}
