package sim

import (
	"math/rand/v2"
	"testing"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
)

// Thirty real GossipSub hosts with the daemon's options: every peer gets
// every attestation, the bytes counted on the streams are exactly the
// RPCs GossipSub decoded, and a peer receives at least one full copy of
// each message — the lower bound memnet counts.
func TestGossipSubAmplification(t *testing.T) {
	r, err := MeasureGossipSub(t.Context(), GossipOptions{Peers: 30, Messages: 5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if !r.DeliveredAll {
		t.Errorf("delivered %d of %d messages", r.Delivered, r.Deliveries)
	}
	if !r.WireMatchesRPCs {
		t.Error("bytes read from the GossipSub streams differ from the received RPCs' sizes")
	}
	if r.CopiesPerMessage < 1 || r.PayloadBytes < float64(r.MessageBytes) || r.Amplification < 1 {
		t.Errorf("a peer received %.2f copies, %.0f payload bytes per %d-byte message (amplification %.2f): fewer than one",
			r.CopiesPerMessage, r.PayloadBytes, r.MessageBytes, r.Amplification)
	}
	// The daemon's attestations are big enough for GossipSub v1.2's
	// IDONTWANT, and its peers send it.
	if r.MessageBytes < pubsub.GossipSubIDontWantMessageThreshold || r.IDontWantBytes == 0 {
		t.Errorf("%d-byte messages, %.0f IDONTWANT bytes per message: IDONTWANT not in use", r.MessageBytes, r.IDontWantBytes)
	}
}

// Announced as the daemon announces: every peer gets every attestation,
// fetched once — a peer reads the record about once per message on the
// fetch streams, however many copies of the announcement GossipSub sends
// — and in all fewer bytes than whole attestations gossiped on a network
// of the same size (another seed: two networks of the same host keys in
// one process do not both form their mesh).
func TestGossipSubAnnounced(t *testing.T) {
	whole, err := MeasureGossipSub(t.Context(), GossipOptions{Peers: 30, Messages: 5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	r, err := MeasureGossipSub(t.Context(), GossipOptions{Peers: 30, Messages: 5, Seed: 4, Announce: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *r)
	if !r.DeliveredAll {
		t.Errorf("delivered %d of %d announcements", r.Delivered, r.Deliveries)
	}
	record := float64(r.MessageBytes)
	if r.FetchBytes < record || r.FetchBytes > 1.5*record {
		t.Errorf("a peer read %.0f bytes of records per %d-byte attestation: want it once", r.FetchBytes, r.MessageBytes)
	}
	if r.Amplification >= whole.Amplification {
		t.Errorf("announced: %.2f, whole: %.2f — announcements did not save anything", r.Amplification, whole.Amplification)
	}
}

func TestGossipSubUnknownVariant(t *testing.T) {
	if _, err := MeasureGossipSub(t.Context(), GossipOptions{Peers: 2, Messages: 1, Variant: "d3"}); err == nil {
		t.Error("an unknown variant was accepted")
	}
}

// The random graph keeps the connection manager's marks.
func TestConnGraph(t *testing.T) {
	for _, n := range []int{10, 200} {
		adj := connGraph(n, 32, 64, rand.New(rand.NewPCG(1, 2)))
		for i, nb := range adj {
			lo, hi := min(32, n-1), min(64, n-1)
			if len(nb) > hi || len(nb) < lo {
				t.Errorf("n=%d: peer %d has %d connections, want %d–%d", n, i, len(nb), lo, hi)
			}
			seen := map[int]bool{}
			for _, j := range nb {
				if j == i || seen[j] {
					t.Errorf("n=%d: peer %d linked to %d twice or to itself", n, i, j)
				}
				seen[j] = true
			}
		}
	}
}
