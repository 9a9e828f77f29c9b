package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestCPVBuilds: the CPVs of one platform's attestations that match, each
// with its build keys once, from the indexes; other platforms' records
// never show.
func TestCPVBuilds(t *testing.T) {
	s := openTest(t, t.TempDir())
	recs := []AttestationRecord{
		{BuildKey: "bk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "A", Blob: []byte("1")},
		{BuildKey: "bk1", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "B", Blob: []byte("2")},
		{BuildKey: "bk2", CPV: "app-misc/hello-1.0", Platform: "amd64", Attester: "C", Blob: []byte("3")},
		{BuildKey: "bk3", CPV: "dev-libs/libhello-2", Platform: "amd64", Attester: "A", Blob: []byte("4")},
		{BuildKey: "bk4", CPV: "app-misc/hello-1.0", Platform: "arm64", Attester: "A", Blob: []byte("5")},
		{BuildKey: "bk5", CPV: "app-misc/layout-1.0", Platform: "amd64", Attester: "A", Blob: []byte("6")},
	}
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	contains := func(q string) func(string) bool { return func(c string) bool { return strings.Contains(c, q) } }
	for _, tt := range []struct {
		platform, q string
		want        map[string][]string
	}{
		{"amd64", "hello", map[string][]string{"app-misc/hello-1.0": {"bk1", "bk2"}, "dev-libs/libhello-2": {"bk3"}}},
		{"arm64", "hello", map[string][]string{"app-misc/hello-1.0": {"bk4"}}},
		{"amd64", "app-misc/", map[string][]string{"app-misc/hello-1.0": {"bk1", "bk2"}, "app-misc/layout-1.0": {"bk5"}}},
		{"riscv", "hello", map[string][]string{}},
		{"amd64", "nothing", map[string][]string{}},
	} {
		got, err := s.CPVBuilds(tt.platform, contains(tt.q))
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("CPVBuilds(%q, %q) = %v, %v; want %v", tt.platform, tt.q, got, err, tt.want)
		}
	}
}

// TestMatchingCPVs: the bounded walk an about request makes: distinct
// CPVs of one platform that match, at most limit of them, from at most
// maxScan index entries, and none once ctx is done.
func TestMatchingCPVs(t *testing.T) {
	s := openTest(t, t.TempDir())
	var recs []AttestationRecord
	for i := range 40 {
		for _, plat := range []string{"amd64", "arm64"} {
			recs = append(recs, AttestationRecord{BuildKey: fmt.Sprintf("bk%d-%s", i, plat), CPV: fmt.Sprintf("app-misc/p%02d-1.0", i),
				Platform: plat, Attester: "A", Blob: fmt.Appendf(nil, "%d-%s", i, plat)})
		}
	}
	recs = append(recs, AttestationRecord{BuildKey: "only-arm", CPV: "app-misc/armonly-1", Platform: "arm64", Attester: "A", Blob: []byte("x")})
	if _, err := s.PutAttestations(recs); err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	ctx := context.Background()
	got, err := s.MatchingCPVs(ctx, "amd64", all, 5, 1<<20)
	if want := []string{"app-misc/p00-1.0", "app-misc/p01-1.0", "app-misc/p02-1.0", "app-misc/p03-1.0", "app-misc/p04-1.0"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("limit 5: %v, %v; want %v", got, err, want)
	}
	if got, err := s.MatchingCPVs(ctx, "amd64", func(c string) bool { return strings.Contains(c, "only") }, 5, 1<<20); err != nil || len(got) != 0 {
		t.Errorf("another platform's CPV: %v, %v", got, err)
	}
	if got, err := s.MatchingCPVs(ctx, "arm64", func(c string) bool { return strings.Contains(c, "only") }, 5, 1<<20); err != nil || !slices.Equal(got, []string{"app-misc/armonly-1"}) {
		t.Errorf("arm64 only: %v, %v", got, err)
	}
	// Two entries per CPV in index order (armonly first): 7 entries reach p02.
	if got, err := s.MatchingCPVs(ctx, "amd64", all, 100, 7); err != nil || !slices.Equal(got, []string{"app-misc/p00-1.0", "app-misc/p01-1.0", "app-misc/p02-1.0"}) {
		t.Errorf("maxScan 7: %v, %v", got, err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.MatchingCPVs(done, "amd64", all, 100, 1<<20); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
}
