package wire

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// PeerRates is a token bucket per remote peer: how often one peer may make
// this daemon do a piece of work (verify a gossip message, answer an about
// request) before it is refused without doing it.
type PeerRates struct {
	mu    sync.Mutex
	rate  rate.Limit
	burst int
	m     map[peer.ID]*rate.Limiter
}

// NewPeerRates allows each peer r events a second after a burst of burst.
func NewPeerRates(r rate.Limit, burst int) *PeerRates {
	return &PeerRates{rate: r, burst: burst}
}

// MaxRatedPeers bounds the limiter map; when full, idle peers are
// forgotten, and only if none is idle does it start over (a peer then gets
// a fresh burst, which is bounded too).
const MaxRatedPeers = 4096

// Allow takes one token of p's bucket, reporting whether there was one.
func (r *PeerRates) Allow(p peer.ID) bool { return r.AllowN(p, 1) }

// AllowN takes n tokens of p's bucket at once, or none, reporting whether
// there were n.
func (r *PeerRates) AllowN(p peer.ID, n int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.m[p]
	if !ok {
		if r.m == nil {
			r.m = make(map[peer.ID]*rate.Limiter)
		}
		if len(r.m) >= MaxRatedPeers {
			// Forget the idle (full-bucket) peers first: forgetting an
			// active one would hand it a fresh burst.
			for q, ql := range r.m {
				if ql.Tokens() >= float64(r.burst) {
					delete(r.m, q)
				}
			}
			if len(r.m) >= MaxRatedPeers {
				r.m = make(map[peer.ID]*rate.Limiter)
			}
		}
		l = rate.NewLimiter(r.rate, r.burst)
		r.m[p] = l
	}
	return l.AllowN(time.Now(), n)
}
