package p2p

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestRequestLimiterPerPeerAndTotal(t *testing.T) {
	l := newRequestLimiter(2, 3)
	a, b := peer.ID("a"), peer.ID("b")
	steps := []struct {
		p    peer.ID
		want bool
	}{{a, true}, {a, true}, {a, false}, {b, true}, {b, false}}
	for i, s := range steps {
		if got := l.acquire(s.p); got != s.want {
			t.Fatalf("step %d: acquire(%s) = %v, want %v", i, s.p, got, s.want)
		}
	}
	l.release(a)
	if !l.acquire(b) {
		t.Fatal("a released slot was not free for another peer")
	}
	l.release(a)
	l.release(b)
	l.release(b)
	if l.total != 0 || len(l.active) != 0 {
		t.Fatalf("after releasing everything: total %d, active %v", l.total, l.active)
	}
}
