// Package sim is the network simulator behind `go run ./cmd/p2psim`: a
// population of Gentoo machines (platforms, toolchains, installed
// packages, churn, NAT) run for simulated days on the project's real code
// — real identities, descriptors and build keys, signed attestations,
// each peer's votes.Book and store.Store on an in-memory network, and
// go-libp2p-kad-dht between real libp2p hosts on mocknet — and the
// figures docs/SCALE.md discusses.
package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/identity"
)

// Model is the population model. Every number is documented with its
// source or marked as an assumption in docs/SCALE.md.
type Model struct {
	Nodes int
	Days  int
	// Packages is the size of the simulated tree; InstalledMean the mean
	// installed set; ZipfS the popularity exponent (installs and requests).
	Packages      int
	InstalledMean float64
	ZipfS         float64
	// BumpPerDay is the chance a package gets a new version on a given
	// day; users update every UpdateMinDays..UpdateMaxDays.
	BumpPerDay                   float64
	UpdateMinDays, UpdateMaxDays int
	// Reproducible is the share of packages whose honest builds agree.
	Reproducible float64
	// NAT is the share of peers that cannot accept inbound connections;
	// HolePunch the chance a hole punch to one of them succeeds.
	NAT, HolePunch float64
	// OnlineMinHours..OnlineMaxHours is a peer's daily online window.
	OnlineMinHours, OnlineMaxHours int
	// RequestsPerDay is each peer's emerge requests per online day.
	RequestsPerDay float64
	// Threshold is the trust threshold every peer uses (the default).
	Threshold int
	// RTTMinMS..RTTMaxMS bound the round trip between two peers.
	RTTMinMS, RTTMaxMS int
}

// DefaultModel is the model docs/SCALE.md describes, for n peers.
func DefaultModel(n int) Model {
	return Model{
		Nodes: n, Days: 7,
		Packages: 2000, InstalledMean: 40, ZipfS: 1.0,
		BumpPerDay: 1.0 / 20, UpdateMinDays: 1, UpdateMaxDays: 7,
		Reproducible: 0.85,
		NAT:          0.6, HolePunch: 0.7,
		OnlineMinHours: 4, OnlineMaxHours: 24,
		RequestsPerDay: 0.3,
		Threshold:      3,
		RTTMinMS:       20, RTTMaxMS: 200,
	}
}

func (m Model) oneWay(rng *rand.Rand) time.Duration {
	rtt := m.RTTMinMS + rng.IntN(m.RTTMaxMS-m.RTTMinMS+1)
	return time.Duration(rtt) * time.Millisecond / 2
}

// Platform is one CHOST and set of flags, as the daemon resolves them
// (-march=native already replaced by the CPU's target).
type Platform struct {
	Name  string // for people: "native/znver3", "tail/17"
	CHOST string
	Flags string
	// ID is the real identity platform string the daemon derives.
	ID string
}

// Toolchain is a compiler a builder uses. Its version changes the code of
// every compiled file (issue 14's measurement on real packages).
type Toolchain struct {
	Name string
	GCC  string
}

// Peer is one machine of the population.
type Peer struct {
	Platform  int
	Toolchain int
	NAT       bool
	// Online is the daily window [OnlineStart, OnlineStart+OnlineHours)
	// in hours, wrapping at midnight.
	OnlineStart, OnlineHours int
	// UpdateEvery is how many days apart this user runs emerge -uDN @world;
	// UpdateOffset the first such day.
	UpdateEvery, UpdateOffset int
	Installed                 []int // package indexes, ascending
	// USE is this machine's USE variant of each package (0 the profile
	// default), by package index, drawn once.
	useSeed uint64
}

// Package is one package of the simulated tree.
type Package struct {
	Name         string // category/name
	Reproducible bool
	// Bumps are the simulated days a new version appears (version 1 is
	// there before day 0).
	Bumps []int
}

// Population is a drawn population.
type Population struct {
	Seed       uint64
	Model      Model
	Platforms  []Platform
	Toolchains []Toolchain
	Peers      []Peer
	Packages   []Package
	zipf       []float64 // cumulative request weights
}

// The -march=native targets of the CPUs people run, and their weights
// (an assumption: docs/SCALE.md).
var nativeTargets = []struct {
	march  string
	weight float64
}{
	{"znver4", 0.14}, {"znver3", 0.16}, {"znver2", 0.10}, {"znver5", 0.04},
	{"alderlake", 0.14}, {"raptorlake", 0.08}, {"skylake", 0.12},
	{"haswell", 0.08}, {"tigerlake", 0.06}, {"icelake-client", 0.04}, {"x86-64-v2", 0.04},
}

var toolchains = []struct {
	tc     Toolchain
	weight float64
}{
	{Toolchain{"gcc-14", "14.3.1"}, 0.70}, {Toolchain{"gcc-13", "13.4.0"}, 0.20}, {Toolchain{"gcc-15", "15.2.0"}, 0.10},
}

// tailSets is the number of rare flag sets in the long tail.
const tailSets = 300

// NewPopulation draws a population from m with seed.
func NewPopulation(m Model, seed uint64) (*Population, error) {
	if m.Nodes < 2 || m.Days < 1 || m.Packages < 1 || m.Threshold < 1 {
		return nil, fmt.Errorf("sim: model needs at least 2 nodes, 1 day, 1 package and threshold 1: %+v", m)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	pop := &Population{Seed: seed, Model: m}
	const chost = "x86_64-pc-linux-gnu"
	addPlatform := func(name, flags string) int {
		d := identity.Descriptor{CHOST: chost, CFLAGS: flags, CXXFLAGS: flags, LDFLAGS: "-Wl,-O1 -Wl,--as-needed"}
		pop.Platforms = append(pop.Platforms, Platform{Name: name, CHOST: chost, Flags: flags, ID: d.Platform()})
		return len(pop.Platforms) - 1
	}
	// Flag families: the Handbook's -march=native (resolved per CPU), a
	// generic build, an x86-64-v3 build and an -O3/LTO enthusiast set,
	// then a long tail of personal sets.
	var native, o3 []int
	for _, t := range nativeTargets {
		native = append(native, addPlatform("native/"+t.march, "-march="+t.march+" -O2 -pipe"))
		o3 = append(o3, addPlatform("o3lto/"+t.march, "-march="+t.march+" -O3 -pipe -flto"))
	}
	generic := addPlatform("generic", "-O2 -pipe")
	v3 := addPlatform("x86-64-v3", "-march=x86-64-v3 -O2 -pipe")
	tailStart := len(pop.Platforms)
	for i := range tailSets {
		t := nativeTargets[i%len(nativeTargets)].march
		addPlatform(fmt.Sprintf("tail/%d", i), fmt.Sprintf("-march=%s -O2 -pipe -fno-plt -falign-functions=%d", t, 32+i))
	}
	pickNative := func() int {
		x := rng.Float64()
		for i, t := range nativeTargets {
			if x -= t.weight; x < 0 {
				return i
			}
		}
		return len(nativeTargets) - 1
	}
	for _, tc := range toolchains {
		pop.Toolchains = append(pop.Toolchains, tc.tc)
	}
	for i := range m.Packages {
		p := Package{Name: fmt.Sprintf("cat-%d/pkg%d", i%40, i), Reproducible: rng.Float64() < m.Reproducible}
		for day := range m.Days {
			if rng.Float64() < m.BumpPerDay {
				p.Bumps = append(p.Bumps, day)
			}
		}
		pop.Packages = append(pop.Packages, p)
	}
	// Installs: package i is installed with probability c/i^s, c chosen so
	// the mean installed set is InstalledMean.
	w := make([]float64, m.Packages)
	var sum float64
	for i := range w {
		w[i] = 1 / math.Pow(float64(i+1), m.ZipfS)
		sum += w[i]
	}
	c := m.InstalledMean / sum
	for c*w[0] > 1 { // the most popular packages are everywhere
		c *= 0.99
	}
	// Requests: the same popularity, as a cumulative distribution.
	pop.zipf = make([]float64, m.Packages)
	acc := 0.0
	for i := range w {
		acc += w[i] / sum
		pop.zipf[i] = acc
	}
	for range m.Nodes {
		var p Peer
		switch x := rng.Float64(); {
		case x < 0.60:
			p.Platform = native[pickNative()]
		case x < 0.70:
			p.Platform = generic
		case x < 0.80:
			p.Platform = v3
		case x < 0.85:
			p.Platform = o3[pickNative()]
		default:
			p.Platform = tailStart + zipfInt(rng, tailSets, 1.0)
		}
		x := rng.Float64()
		for i, tc := range toolchains {
			if x -= tc.weight; x < 0 || i == len(toolchains)-1 {
				p.Toolchain = i
				break
			}
		}
		p.NAT = rng.Float64() < m.NAT
		p.OnlineHours = m.OnlineMinHours + rng.IntN(m.OnlineMaxHours-m.OnlineMinHours+1)
		p.OnlineStart = rng.IntN(24)
		p.UpdateEvery = m.UpdateMinDays + rng.IntN(m.UpdateMaxDays-m.UpdateMinDays+1)
		p.UpdateOffset = rng.IntN(p.UpdateEvery)
		p.useSeed = rng.Uint64()
		for i := range w {
			if rng.Float64() < c*w[i] {
				p.Installed = append(p.Installed, i)
			}
		}
		pop.Peers = append(pop.Peers, p)
	}
	return pop, nil
}

// zipfInt draws 0..n-1 with weight 1/(i+1)^s.
func zipfInt(rng *rand.Rand, n int, s float64) int {
	var sum float64
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
	}
	x := rng.Float64() * sum
	for i := range n {
		if x -= 1 / math.Pow(float64(i+1), s); x < 0 {
			return i
		}
	}
	return n - 1
}

// Request draws a package by popularity.
func (pop *Population) request(rng *rand.Rand) int {
	x := rng.Float64()
	lo, hi := 0, len(pop.zipf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if pop.zipf[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// USE is peer p's USE variant of package pkg: the profile default for
// most, one of two others for some.
func (p Peer) USE(pkg int) int {
	r := rand.New(rand.NewPCG(p.useSeed, uint64(pkg)))
	switch x := r.Float64(); {
	case x < 0.85:
		return 0
	case x < 0.95:
		return 1
	default:
		return 2
	}
}

// OnlineAt says whether the peer is online at hour h of the simulation.
func (p Peer) OnlineAt(h int) bool {
	return ((h%24)-p.OnlineStart+24)%24 < p.OnlineHours
}

// Version is package pkg's newest version on day.
func (pop *Population) Version(pkg, day int) int {
	v := 1
	for _, b := range pop.Packages[pkg].Bumps {
		if b <= day {
			v++
		}
	}
	return v
}

// Reachable says whether a requester can fetch from provider: a public
// provider always, a NATed one when a hole punch between the two
// succeeds (decided once per pair).
func (pop *Population) Reachable(requester, provider int) bool {
	if !pop.Peers[provider].NAT {
		return true
	}
	a, b := min(requester, provider), max(requester, provider)
	r := rand.New(rand.NewPCG(pop.Seed^uint64(a)<<20, uint64(b)))
	return r.Float64() < pop.Model.HolePunch
}
