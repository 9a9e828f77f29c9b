package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/internal/sim"
)

type gossipSettings struct {
	messages *int
	variant  *string
	quiet    *time.Duration
	share    *float64
	whole    *bool
}

func gossipFlags(fs *flag.FlagSet) gossipSettings {
	return gossipSettings{
		messages: fs.Int("gossipsub-messages", 20, "with -gossipsub: attestations to publish, one per heartbeat"),
		variant:  fs.String("gossipsub-variant", string(sim.GossipDaemon), fmt.Sprintf("with -gossipsub: the daemon's GossipSub options or a change to them: %v", sim.GossipVariants)),
		share:    fs.Float64("gossipsub-share", 1, "with -gossipsub: share of a peer's 32–64 connections on its platform's topic (connections are random with respect to platform)"),
		quiet:    fs.Duration("gossipsub-quiet", time.Minute, "with -gossipsub: how long to measure the traffic with no message"),
		whole:    fs.Bool("gossipsub-whole", false, "with -gossipsub: gossip whole attestations, as daemons did before announcements, instead of announcing ids and fetching each record from the relay"),
	}
}

func measureGossip(ctx context.Context, peers int, seed uint64, g gossipSettings, progress, stdout io.Writer, asJSON bool) error {
	r, err := sim.MeasureGossipSub(ctx, sim.GossipOptions{
		Peers: peers, Messages: *g.messages, Seed: seed, Variant: sim.GossipVariant(*g.variant),
		Paced: true, Quiet: *g.quiet, TopicShare: *g.share, Announce: !*g.whole, Log: progress,
	})
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	_, err = fmt.Fprintf(stdout, `peers %d (topic share %.2f: connections on the topic %d–%d, mean %.1f; mesh %.1f), variant %s
messages %d of %d bytes (announced in %d bytes, fetched: %.0f B per peer and message; 0 when gossiped whole), delivered %d of %d
amplification %.2f (p50 %.2f, max %.2f across peers), %.2f copies and %.1f RPCs per peer and message
per peer and message: payload %.0f B, IHAVE %.0f, IWANT %.0f, IDONTWANT %.0f, GRAFT/PRUNE %.0f, other %.0f
no messages: %.0f bytes per peer and hour (measured %.0f s)
`, r.Peers, r.TopicShare, r.ConnMin, r.ConnMax, r.ConnMean, r.MeshMean, r.Variant,
		r.Messages, r.MessageBytes, r.AnnouncementBytes, r.FetchBytes, r.Delivered, r.Deliveries,
		r.Amplification, r.AmplificationP50, r.AmplificationMax, r.CopiesPerMessage, r.RPCsPerMessage,
		r.PayloadBytes, r.IHaveBytes, r.IWantBytes, r.IDontWantBytes, r.GraftPruneBytes, r.OtherBytes,
		r.QuietBytesPerPeerHour, r.QuietS)
	return err
}
