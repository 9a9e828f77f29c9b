package store

import (
	"reflect"
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
