package sim

import (
	"fmt"
	"strings"
)

// Table is the result for people: one figure a line.
func (r *Result) Table() string {
	var b strings.Builder
	kind := "measured"
	if r.Modelled {
		kind = "modelled"
	}
	fmt.Fprintf(&b, "%s (%s design): %d peers, %d days, %d platforms (largest %.0f %% of peers)\n", kind, r.Design, r.Nodes, r.Days, r.Platforms, 100*r.LargestPlatformShare)
	row := func(name, format string, v ...any) {
		fmt.Fprintf(&b, "  %-28s "+format+"\n", append([]any{name}, v...)...)
	}
	row("builds", "%d (%d attestations)", r.Builds, r.Attestations)
	row("requests", "%d", r.Requests)
	row("hit rate", "%.3f of requests (ideal %.3f, ratio %.3f)", r.HitRate, r.IdealHitRate, ratio(r.HitRate, r.IdealHitRate))
	row("lost of the ideal", "not allowed %d (%d disputes, %d below threshold by standing), no provider online %d, NAT %d (%.1f %%)", r.LostNotAllowed, r.LostDispute, r.LostStanding, r.LostOffline, r.LostNAT, 100*r.NATLoss)
	row("false accepts", "%d", r.FalseAccepts)
	if r.Adversary != "" && r.Adversary != None {
		row("adversary", "%s: %d attestations sent", r.Adversary, r.AdversaryAttestations)
	}
	if r.Modelled {
		row("time to installable", "p50 %.1f s, p99 %.1f s (as measured)", r.TimeToInstallableP50S, r.TimeToInstallableP99S)
	} else {
		row("time to installable", "p50 %.1f s, p99 %.1f s (%d builds; %d never)", r.TimeToInstallableP50S, r.TimeToInstallableP99S, r.Installable, r.NeverInstallable)
		row("from threshold weight", "p50 %.1f s, p99 %.1f s (%d builds)", r.WeightToInstallableP50S, r.WeightToInstallableP99S, r.WeightInstallable)
	}
	if r.Donors > 0 {
		row("donors", "%d: %d builds (%d rebuilds), %.0f build hours; %d demand records", r.Donors, r.DonorBuilds, r.DonorRebuilds, r.DonorBuildHours, r.DemandRecords)
	}
	row("control bytes/peer/day", "%s (received: gossip, catalog pages and attest answers %s, of which syncs on return %s; DHT %s; periodic catalog resync %s)", bytesText(r.ControlBytesPerPeerDay), bytesText(r.GossipBytesPerPeerDay), bytesText(r.SyncReturnBytesPerPeerDay), bytesText(r.DHTBytesPerPeerDay), bytesText(r.ResyncBytesPerPeerDay))
	if r.ControlBytesGossipSub > 0 {
		row("  with GossipSub's copies", "%s (gossip × %.2f)", bytesText(r.ControlBytesGossipSub), GossipSubFactor)
	}
	if r.Modelled {
		row("store bytes/peer", "%s", bytesText(r.StoreBytesPerPeer))
	} else {
		row("store bytes/peer", "%s (largest %s, file %s)", bytesText(r.StoreBytesPerPeer), bytesText(r.StoreBytesPerPeerMax), bytesText(r.StoreFileBytesPerPeer))
	}
	row("DHT lookup", "p50 %.0f ms, p99 %.0f ms (%.1f requests each; %.0f %% found)", r.LookupP50MS, r.LookupP99MS, r.RPCsPerLookup, 100*r.LookupsFound)
	if r.Modelled {
		row("DHT provide", "p50 %.0f ms (%.1f requests each)", r.ProvideP50MS, r.RPCsPerProvide)
	} else {
		row("DHT provide", "p50 %.0f ms, p99 %.0f ms (%.1f requests each)", r.ProvideP50MS, r.ProvideP99MS, r.RPCsPerProvide)
	}
	if r.WallSeconds > 0 {
		row("wall time", "%.0f s", r.WallSeconds)
	}
	for _, a := range r.Assumptions {
		fmt.Fprintf(&b, "  assumes: %s\n", a)
	}
	return b.String()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func bytesText(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GB", n/1e9)
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MB", n/1e6)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", n/1e3)
	}
	return fmt.Sprintf("%.0f B", n)
}
