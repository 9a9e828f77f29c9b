package api

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText renders the status as one screen a user understands at a glance,
// in the spirit of `tailscale status`. now is passed in so the output is
// reproducible in tests.
func (s *Status) WriteText(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }

	p("mode", "%s", s.Mode)
	p("peer id", "%s", s.PeerID)
	p("reachability", "%s, %d peer%s connected", orDash(s.Reachability), s.Peers, plural(s.Peers))
	if s.Discovery != "" {
		p("discovery", "%s", s.Discovery)
	}
	if len(s.Addrs) > 0 {
		p("listening", "%s", strings.Join(s.Addrs, " "))
	}
	p("up", "%s (since %s)", durationText(now.Sub(s.StartedAt)), s.StartedAt.UTC().Format(time.RFC3339))
	p("platform", "%s", orDash(s.Platform))
	pk := orDash(s.PKGDIR)
	if s.PKGDIRNote != "" {
		pk += " (" + s.PKGDIRNote + ")"
	}
	p("PKGDIR", "%s", pk)
	p("builds shared", "%d, %d DHT key%s provided", s.PackagesShared, s.KeysProvided, plural(s.KeysProvided))
	switch {
	case s.KeysProvided == 0:
		p("reprovide", "nothing to provide")
	case s.LastReprovide.IsZero():
		p("reprovide", "pending")
	case s.ReprovideLag > 0:
		p("reprovide", "last %s ago, %s overdue", durationText(now.Sub(s.LastReprovide)), durationText(s.ReprovideLag))
	default:
		p("reprovide", "last %s ago, on schedule", durationText(now.Sub(s.LastReprovide)))
	}
	p("catalog", "%d build%s, %d attestation%s (%d rejected)", s.CatalogBuilds, plural(s.CatalogBuilds),
		s.CatalogAttestations, plural(s.CatalogAttestations), s.RejectedAttestations)
	p("fetched", "%d build%s, %s in, %s out", s.BuildsFetched, plural(s.BuildsFetched), bytesText(s.BytesFetched), bytesText(s.BytesServed))
	if s.LastFetchError != "" {
		p("last failed fetch", "%s ago: %s", durationText(now.Sub(s.LastFetchErrorAt)), s.LastFetchError)
	}
	p("saved", "%s of binpkgs portage did not compile; %d binary install%s reported by the hook", bytesText(s.BytesSaved), s.Installs, plural(int(s.Installs)))
	p("demand", "%d demand record%s held (variants peers and this machine use)", s.Demands, plural(s.Demands))
	if s.CacheLimit > 0 {
		p("cache", "%s of %s", bytesText(s.CacheBytes), bytesText(s.CacheLimit))
	}
	if b := s.Builder; b != nil {
		role := "builds"
		if b.Rebuild {
			role = "builds and rebuilds"
		}
		p("donated", "%s: %d queued, %d running, %d done, %d failed; %s of CPU", role, b.Queued, len(b.Running), b.Done, b.Failed,
			durationText(time.Duration(b.CPUSeconds*float64(time.Second))))
		for _, j := range b.Running {
			p("  building", "%s (%s, %d wanting it) for %s", j.CPV, j.Kind, j.Wanters, durationText(now.Sub(j.Started)))
		}
		if b.Note != "" {
			p("  on hold", "%s", b.Note)
		}
	}
	trustLine := fmt.Sprintf("threshold %d, %d dispute%s, %d equivocating peer%s", s.Threshold,
		s.Disputes, plural(s.Disputes), s.Equivocations, plural(s.Equivocations))
	if s.RebuildDisagreements > 0 {
		trustLine += fmt.Sprintf(", %d rebuild%s disagreeing with this node's builds (trust explain)", s.RebuildDisagreements,
			plural(s.RebuildDisagreements))
	}
	p("trust", "%s", trustLine)
	p("standing", "%d established attester%s, %d earning, %d vouched by you, %d weighted by signed vouches; fresh keys weigh %d %%", s.Established, plural(s.Established),
		s.Earning, s.Vouched, s.VouchWeighted, s.FreshWeight)
	if s.GatewayURL != "" {
		p("gateway", "%s, %d build%s listed for portage", s.GatewayURL, s.GatewayListed, plural(s.GatewayListed))
		if s.GatewayNote != "" {
			p("", "%s", s.GatewayNote)
		}
	} else {
		p("gateway", "off")
	}
	if s.MetricsURL != "" {
		p("metrics", "%s", s.MetricsURL)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// bytesText prints sizes in binary units, the way du -h users read them.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit && exp < 5; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// durationText rounds to what a person cares about.
func durationText(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
