// Package builder donates this machine's CPU to the network: it builds,
// with real portage in a root of its own, the most-demanded variants of
// this platform that lack a trusted build (and, as a rebuilder, those
// with fewer reproducers than the threshold), within the limits the user
// set, and hands every binpkg to own to index, attest and announce like
// any local build. It never builds into the host's installed system: the
// build command (packaging/gentoo-p2pd-build) writes only below Root.
package builder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// Want is one variant the network asks for, with what a build of it
// needs: the package and its USE flags.
type Want struct {
	Variant keys.Variant
	CPV     string
	USE     []string
	// Wanters counts the peers that asked for it: the most wanted is
	// built first.
	Wanters int
}

// Demand lists what peers of this platform and toolchain want built,
// most wanted first, at most n. The daemon's adapter filters the
// network's demand to this node's platform.
type Demand interface {
	Wanted(ctx context.Context, n int) ([]Want, error)
}

// Supply says what the network already has of a variant: whether a
// trusted build exists, how many distinct attesters its leading content
// has, and whether this node attested one itself. *votes.Book implements it.
type Supply interface {
	Supply(ctx context.Context, v keys.Variant) (trusted bool, reproducers int, thisNode bool, err error)
}

// Announcer indexes, attests and announces a binpkg the builder wrote
// (*own.Builds, with the builder's PKGDIR among its directories).
type Announcer interface {
	Announce(ctx context.Context, path string) (store.LocalPackage, error)
}

// Counters keeps the builder's totals across restarts (*store.Store).
type Counters interface {
	IncCounter(name string, delta int64) error
	Counters() (map[string]int64, error)
}

// The store counters the builder keeps its totals in.
const (
	counterDone   = "builder_done"
	counterFailed = "builder_failed"
	counterCPUms  = "builder_cpu_ms"
)

// Options configure a Builder. Zero values take the documented defaults.
type Options struct {
	Demand    Demand
	Supply    Supply
	Announcer Announcer
	Counters  Counters

	// Command is the build command's argv, run once per build with the
	// job in its environment (see Env*). Required.
	Command []string
	// Root is the builder's own directory: PKGDIR (Root/pkgdir), the
	// jobs' scratch directories (Root/jobs) and logs (Root/logs). The
	// build command writes nowhere else.
	Root string
	// Rebuild turns on the rebuilder role: variants with a trusted build
	// but fewer than Threshold reproducers are built again.
	Rebuild   bool
	Threshold int
	// MaxConcurrent builds run at once (default 1); Jobs is the make
	// jobs each gets (default: the cores shared among them).
	MaxConcurrent int
	Jobs          int
	// Nice is the niceness the build runs at (0 leaves it; the daemon
	// passes build.nice, 19 by default).
	Nice int
	// Timeout ends a build that runs longer (0: none).
	Timeout time.Duration
	// DiskBudget: no build starts while Root holds more bytes (0: none).
	DiskBudget int64
	// WhenIdle: no build starts while the one-minute load average is at
	// or above this percentage of the cores (0: start whatever the load).
	WhenIdle int
	// QueueLen bounds the builds planned ahead (default 16).
	QueueLen int
	// Interval is how often demand is read again (default 1 minute).
	Interval time.Duration
	// Backoff is how long a variant whose build failed waits before it
	// is tried again; it doubles with each failure up to MaxBackoff
	// (defaults 1 hour and 7 days).
	Backoff, MaxBackoff time.Duration
	// LoadAvg returns the one-minute load average (default: /proc/loadavg).
	LoadAvg func() (float64, error)
	// Now is the clock backoff is dated by (default time.Now).
	Now      func() time.Time
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Builder plans and runs the donated builds.
type Builder struct {
	o       Options
	pkgdir  string
	log     *slog.Logger
	metrics *metrics
	wake    chan struct{}

	mu      sync.Mutex
	queue   []job
	running map[keys.Variant]*job
	failed  map[keys.Variant]backoff
	recent  []api.BuildJob
	note    string
	seq     int
}

// job is one planned build.
type job struct {
	Want
	kind    string
	started time.Time
}

// backoff is a variant whose builds failed: fails in a row, and when it
// may be tried again.
type backoff struct {
	fails int
	until time.Time
}

// Kinds of build.
const (
	KindBuild   = "build"
	KindRebuild = "rebuild"
)

// maxFailed bounds the variants remembered as failed; past it the one
// whose wait ends first is forgotten.
const maxFailed = 4096

// maxRecent is how many finished builds status lists.
const maxRecent = 10

// New checks o and makes a Builder; nothing runs until Run.
func New(o Options) (*Builder, error) {
	if len(o.Command) == 0 || o.Command[0] == "" {
		return nil, errors.New("builder: build.command is empty")
	}
	if o.Root == "" || !filepath.IsAbs(o.Root) {
		return nil, fmt.Errorf("builder: build.root must be an absolute path, got %q", o.Root)
	}
	if o.Demand == nil || o.Supply == nil || o.Announcer == nil {
		return nil, errors.New("builder: Demand, Supply and Announcer are required")
	}
	o.MaxConcurrent = max(o.MaxConcurrent, 1)
	if o.Jobs <= 0 {
		o.Jobs = max(1, runtime.NumCPU()/o.MaxConcurrent)
	}
	o.QueueLen = cmp.Or(o.QueueLen, 16)
	o.Interval = cmp.Or(o.Interval, time.Minute)
	o.Backoff = cmp.Or(o.Backoff, time.Hour)
	o.MaxBackoff = cmp.Or(o.MaxBackoff, 7*24*time.Hour)
	if o.LoadAvg == nil {
		o.LoadAvg = readLoadAvg
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Builder{
		o: o, pkgdir: PKGDIRIn(o.Root), log: o.Logger,
		metrics: newMetrics(o.Registry), wake: make(chan struct{}, 1),
		running: map[keys.Variant]*job{}, failed: map[keys.Variant]backoff{},
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b, nil
}

// PKGDIR is where the builds land: own indexes it beside portage's.
func (b *Builder) PKGDIR() string { return b.pkgdir }

// PKGDIRIn is the PKGDIR of a builder whose root is root, for whoever
// indexes it before the builder exists.
func PKGDIRIn(root string) string { return filepath.Join(root, "pkgdir") }

// Prepare makes the builder's directories (before own first indexes its
// PKGDIR) and removes scratch directories a killed daemon left behind.
func (b *Builder) Prepare() error {
	for _, d := range []string{b.pkgdir, filepath.Join(b.o.Root, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("builder: %w", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(b.o.Root, "jobs")); err != nil {
		return fmt.Errorf("builder: remove old scratch: %w", err)
	}
	return nil
}

// Run plans and runs builds until ctx ends; it returns once every build
// it started has stopped (a running build is killed when ctx ends).
func (b *Builder) Run(ctx context.Context) error {
	if err := b.Prepare(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(b.o.Interval)
	defer t.Stop()
	for {
		b.plan(ctx)
		for {
			j, ok := b.next()
			if !ok {
				break
			}
			wg.Go(func() {
				b.finish(ctx, j, b.build(ctx, j))
				select {
				case b.wake <- struct{}{}:
				default:
				}
			})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-b.wake:
		}
	}
}

// Status is the builder's state for status.
func (b *Builder) Status() *api.Builds {
	st := &api.Builds{Rebuild: b.o.Rebuild}
	if b.o.Counters != nil {
		if c, err := b.o.Counters.Counters(); err == nil {
			st.Done, st.Failed = c[counterDone], c[counterFailed]
			st.CPUSeconds = float64(c[counterCPUms]) / 1000
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st.Queued, st.Note = len(b.queue), b.note
	for _, j := range b.running {
		st.Running = append(st.Running, j.status())
	}
	slices.SortFunc(st.Running, func(x, y api.BuildJob) int { return x.Started.Compare(y.Started) })
	st.Recent = append(st.Recent, b.recent...)
	return st
}

func (j *job) status() api.BuildJob {
	return api.BuildJob{CPV: j.CPV, USE: j.USE, Variant: j.Variant, Kind: j.kind, Wanters: j.Wanters, Started: j.started.UTC().Truncate(time.Second)}
}
