package sim

import (
	"testing"
	"time"
)

// A resync of agreeing catalogs costs one fingerprints answer: a full one
// finds every record in one of its 16 slices (15 empty ones cost a byte
// each, the full one its count and 16 bytes), an hourly one the slice
// (of 1.6 hours) or two holding its last hour and margin.
func TestResyncAnswersCostOneAnswerPerSync(t *testing.T) {
	epoch := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var times []int64
	for i := range 100 {
		times = append(times, epoch.Unix()+int64(i)*360) // one every 6 minutes for 10 hours
	}
	hourly, full := resyncAnswers(times, epoch, 10)
	if full != 2+15+1+16 {
		t.Fatalf("a full resync's answer is %.1f bytes, want 34", full)
	}
	if hourly < 2+15+1+16 || hourly > 2+14+2*(1+16) {
		t.Fatalf("an hourly resync's answer is %.1f bytes, want one or two slices of records", hourly)
	}
	if h, f := resyncAnswers(nil, epoch, 10); h != 18 || f != 18 {
		t.Fatalf("an empty catalog's answers are %.1f and %.1f bytes, want 16 empty slices", h, f)
	}
}
