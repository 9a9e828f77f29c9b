package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// MeasuredSizes are the network sizes a model or plot is fitted to, up to
// the -nodes given.
var MeasuredSizes = []int{100, 250, 500, 1000}

// Law is how a figure grows with the number of peers N: a + b·N for what
// every peer of a platform receives (the flooding design), a + b·log2 N
// for Kademlia's hops.
type Law string

const (
	Linear Law = "a + b·N"
	Log    Law = "a + b·log2(N)"
)

// Fit is one figure's fitted law and the measured points behind it.
type Fit struct {
	Figure string    `json:"figure"`
	Law    Law       `json:"law"`
	A      float64   `json:"a"`
	B      float64   `json:"b"`
	N      []int     `json:"n"`
	Y      []float64 `json:"y"`
	// Goal is the acceptance goal at 50,000 peers (0: none).
	Goal float64 `json:"goal,omitempty"`
	Unit string  `json:"unit"`
}

// At is the fitted value at n peers.
func (f Fit) At(n int) float64 {
	return f.A + f.B*lawX(f.Law, n)
}

func lawX(law Law, n int) float64 {
	if law == Log {
		return math.Log2(float64(n))
	}
	return float64(n)
}

func fitLaw(figure string, law Law, unit string, goal float64, runs []*Result, y func(*Result) float64) Fit {
	f := Fit{Figure: figure, Law: law, Unit: unit, Goal: goal}
	var sx, sy, sxx, sxy float64
	for _, r := range runs {
		x := lawX(law, r.Nodes)
		v := y(r)
		f.N, f.Y = append(f.N, r.Nodes), append(f.Y, v)
		sx, sy, sxx, sxy = sx+x, sy+v, sxx+x*x, sxy+x*v
	}
	n := float64(len(runs))
	if d := n*sxx - sx*sx; n > 1 && d != 0 {
		f.B = (n*sxy - sx*sy) / d
	}
	f.A = (sy - f.B*sx) / n
	return f
}

// Fitted is a set of measured runs and the laws fitted to them.
type Fitted struct {
	Runs []*Result `json:"runs"`
	Fits []Fit     `json:"fits"`
}

// LoadFitted reads the runs of a fits.json a plot wrote and fits them
// again, so plots and models can be redrawn without running again.
func LoadFitted(path string) (*Fitted, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ft Fitted
	if err := json.Unmarshal(b, &ft); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(ft.Runs) < 2 {
		return nil, fmt.Errorf("%s: %d runs, a model needs two at least", path, len(ft.Runs))
	}
	ft.Fits = fitAll(ft.Runs)
	return &ft, nil
}

// Measure runs o at each of MeasuredSizes up to o.Model.Nodes and fits
// each figure's law.
func Measure(ctx context.Context, o Options) (*Fitted, error) {
	var ft Fitted
	for _, n := range MeasuredSizes {
		if n > o.Model.Nodes {
			break
		}
		oo := o
		oo.Model.Nodes = n
		r, err := Run(ctx, oo)
		if err != nil {
			return nil, fmt.Errorf("sim: %d nodes: %w", n, err)
		}
		ft.Runs = append(ft.Runs, r)
	}
	if len(ft.Runs) < 2 {
		return nil, fmt.Errorf("sim: a model needs runs at two sizes at least: give -nodes %d or more", MeasuredSizes[1])
	}
	ft.Fits = fitAll(ft.Runs)
	return &ft, nil
}

// fitAll fits every figure's law to runs.
func fitAll(runs []*Result) []Fit {
	return []Fit{
		fitLaw("gossip_bytes_per_peer_day", Linear, "bytes", 0, runs, func(r *Result) float64 { return r.GossipBytesPerPeerDay }),
		fitLaw("resync_bytes_per_peer_day", Linear, "bytes", 0, runs, func(r *Result) float64 { return r.ResyncBytesPerPeerDay }),
		fitLaw("sync_return_bytes_per_peer_day", Linear, "bytes", 0, runs, func(r *Result) float64 { return r.SyncReturnBytesPerPeerDay }),
		fitLaw("store_bytes_per_peer", Linear, "bytes", 100e6, runs, func(r *Result) float64 { return r.StoreBytesPerPeer }),
		fitLaw("lookup_p50_ms", Log, "ms", 0, runs, func(r *Result) float64 { return r.LookupP50MS }),
		fitLaw("lookup_p99_ms", Log, "ms", 1000, runs, func(r *Result) float64 { return r.LookupP99MS }),
		fitLaw("provide_p50_ms", Log, "ms", 0, runs, func(r *Result) float64 { return r.ProvideP50MS }),
		fitLaw("rpcs_per_lookup", Log, "requests", 0, runs, func(r *Result) float64 { return r.RPCsPerLookup }),
		fitLaw("rpcs_per_provide", Log, "requests", 0, runs, func(r *Result) float64 { return r.RPCsPerProvide }),
	}
}

func (ft *Fitted) fit(figure string) Fit {
	for _, f := range ft.Fits {
		if f.Figure == figure {
			return f
		}
	}
	panic("sim: no fit for " + figure)
}

// At is the model's result at n peers: the fitted laws for what depends on
// N, the largest measured run's per-peer rates and ratios for the rest.
func (ft *Fitted) At(n int) *Result {
	big := ft.Runs[len(ft.Runs)-1]
	r := *big
	r.Nodes, r.Modelled, r.WallSeconds = n, true, 0
	scale := float64(n) / float64(big.Nodes)
	r.Builds = int(float64(big.Builds) * scale)
	r.Attestations = int(float64(big.Attestations) * scale)
	r.Requests = int(float64(big.Requests) * scale)
	r.Hits, r.Ideal = int(float64(big.Hits)*scale), int(float64(big.Ideal)*scale)
	r.LostNotAllowed, r.LostDispute = int(float64(big.LostNotAllowed)*scale), int(float64(big.LostDispute)*scale)
	r.LostOffline, r.LostNAT = int(float64(big.LostOffline)*scale), int(float64(big.LostNAT)*scale)
	r.Installable, r.NeverInstallable, r.WeightInstallable = 0, 0, 0
	r.Donors, r.DonorBuilds, r.DonorRebuilds = int(float64(big.Donors)*scale), int(float64(big.DonorBuilds)*scale), int(float64(big.DonorRebuilds)*scale)
	r.DonorBuildHours, r.DemandRecords = big.DonorBuildHours*scale, int(float64(big.DemandRecords)*scale)
	r.GossipBytesPerPeerDay = ft.fit("gossip_bytes_per_peer_day").At(n)
	r.StoreBytesPerPeer = ft.fit("store_bytes_per_peer").At(n)
	r.StoreBytesPerPeerMax, r.StoreFileBytesPerPeer = 0, 0
	r.LookupP50MS, r.LookupP99MS = ft.fit("lookup_p50_ms").At(n), ft.fit("lookup_p99_ms").At(n)
	r.ProvideP50MS, r.ProvideP99MS = ft.fit("provide_p50_ms").At(n), 0
	r.RPCsPerLookup, r.RPCsPerProvide = ft.fit("rpcs_per_lookup").At(n), ft.fit("rpcs_per_provide").At(n)
	perPeerDay := func(count int) float64 { return float64(count) / float64(big.Nodes) / float64(big.Days) }
	r.DHTBytesPerPeerDay = (perPeerDay(big.Attestations)*r.RPCsPerProvide + perPeerDay(big.Requests)*r.RPCsPerLookup) * DHTBytesPerRPC
	r.ResyncBytesPerPeerDay = ft.fit("resync_bytes_per_peer_day").At(n)
	r.SyncReturnBytesPerPeerDay = ft.fit("sync_return_bytes_per_peer_day").At(n)
	r.ControlBytesPerPeerDay = r.GossipBytesPerPeerDay + r.DHTBytesPerPeerDay + r.ResyncBytesPerPeerDay
	r.ControlBytesGossipSub = r.ControlBytesPerPeerDay + (GossipSubFactor-1)*max(0, r.GossipBytesPerPeerDay-r.SyncReturnBytesPerPeerDay)
	r.Assumptions = []string{
		fmt.Sprintf("fitted to measured runs at %v peers", sizes(ft.Runs)),
		"gossip, catalog sync and store grow as a + b·N: every peer of a platform receives and keeps every attestation of it, and platform shares do not change with N",
		"DHT requests and latencies grow as a + b·log2(N) (Kademlia hops)",
		"the periodic catalog resync (catalog/3 reconciliation: one fingerprints answer of 16 time slices per sync where the two catalogs agree, as they do under the simulated gossip; records only when missing) fitted as a + b·N: the connected peers of one's platform stay about 48 × its share, and an answer's size hardly grows with the catalog",
		fmt.Sprintf("per-peer builds and requests per day as measured at %d peers; %d bytes per DHT request and answer", big.Nodes, DHTBytesPerRPC),
		fmt.Sprintf("hit rate, false accepts and time to installable as measured at %d peers (not extrapolated)", big.Nodes),
		fmt.Sprintf("control_bytes_per_peer_day_gossipsub: what memnet delivered once by gossip (announcements and the records fetched for them, not the syncs on return) times %.2f, real GossipSub's bytes per record on the daemon's options at about 8 topic peers (measured: p2psim -gossipsub 250 -gossipsub-share 0.14)", GossipSubFactor),
	}
	return &r
}

// GossipSubFactor is what a peer reads per record announced on real
// GossipSub with the daemon's options, over the record's size: the
// announcement's copies, IHAVE, and the record fetched once with its
// framing. Measured on 250 real hosts at about 8 topic peers each (the
// platform-peer discovery's minimum; the largest platform's random share
// is 6.5): `go run ./cmd/p2psim -gossipsub 250 -gossipsub-share 0.14`
// gave 1.365 (p50 1.39, max 1.48) on 2026-12-05 (docs/SCALE.md).
const GossipSubFactor = 1.37

func sizes(runs []*Result) []int {
	var out []int
	for _, r := range runs {
		out = append(out, r.Nodes)
	}
	return out
}

// WritePlots writes the plots and fits.json into dir.
func (ft *Fitted) WritePlots(dir string, upTo int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	control := Fit{Figure: "control_bytes_per_peer_day", Law: "gossip + resync + DHT", Unit: "bytes", Goal: 5e6}
	for _, r := range ft.Runs {
		control.N, control.Y = append(control.N, r.Nodes), append(control.Y, r.ControlBytesPerPeerDay)
	}
	figs := append([]Fit{control}, ft.Fits...)
	for _, f := range figs {
		curve := func(n int) float64 {
			if f.Figure == control.Figure {
				return ft.At(n).ControlBytesPerPeerDay
			}
			return f.At(n)
		}
		svg := plotSVG(f, curve, upTo)
		if err := os.WriteFile(filepath.Join(dir, f.Figure+".svg"), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(ft, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "fits.json"), append(b, '\n'), 0o644)
}

// plotSVG draws a figure against N on a log axis: dots where measured, the
// fitted law as a line, the goal dashed.
func plotSVG(f Fit, curve func(int) float64, upTo int) string {
	const w, h, left, right, top, bottom = 640, 400, 80, 20, 40, 50
	xmin, xmax := math.Log10(100), math.Log10(float64(upTo))
	ymax := f.Goal * 1.2
	var pts [][2]float64
	for i := 0; i <= 60; i++ {
		lx := xmin + (xmax-xmin)*float64(i)/60
		n := int(math.Round(math.Pow(10, lx)))
		v := curve(n)
		pts = append(pts, [2]float64{lx, v})
		ymax = max(ymax, v)
	}
	for _, y := range f.Y {
		ymax = max(ymax, y)
	}
	if ymax <= 0 {
		ymax = 1
	}
	ymax *= 1.05
	px := func(lx float64) float64 { return left + (lx-xmin)/(xmax-xmin)*(w-left-right) }
	py := func(y float64) float64 { return h - bottom - y/ymax*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">%s (%s) against peers; fitted %s</text>`+"\n", left, f.Figure, f.Unit, f.Law)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, h-bottom)
	for _, n := range []int{100, 1000, 10000, 50000} {
		if n > upTo {
			continue
		}
		x := px(math.Log10(float64(n)))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/><text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x, top, x, h-bottom, x, h-bottom+16, n)
	}
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(y)+4, axisText(y, f.Unit))
	}
	var line strings.Builder
	for i, p := range pts {
		if i > 0 {
			line.WriteByte(' ')
		}
		fmt.Fprintf(&line, "%.1f,%.1f", px(p[0]), py(max(0, p[1])))
	}
	fmt.Fprintf(&b, `<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="%s"/>`+"\n", line.String())
	if f.Goal > 0 {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#d62728" stroke-dasharray="6,4"/><text x="%d" y="%.1f" fill="#d62728" text-anchor="end">goal %s</text>`+"\n",
			left, py(f.Goal), w-right, py(f.Goal), w-right, py(f.Goal)-4, axisText(f.Goal, f.Unit))
	}
	for i, n := range f.N {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="#ff7f0e"><title>%d peers: %.4g</title></circle>`+"\n", px(math.Log10(float64(n))), py(f.Y[i]), n, f.Y[i])
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">peers (log scale); dots measured, line fitted</text>`+"\n", (left+w-right)/2, h-12)
	b.WriteString("</svg>\n")
	return b.String()
}

func axisText(v float64, unit string) string {
	if unit == "bytes" {
		return bytesText(v)
	}
	return fmt.Sprintf("%.4g", v)
}
