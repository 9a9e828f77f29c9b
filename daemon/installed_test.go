package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// The refresh of own demand asks the vdb whether a package is still
// installed: an entry directory is, a missing one is not, and a name that
// is not category/package-version is an error, never a path outside the
// vdb.
func TestStillInstalled(t *testing.T) {
	vdb := t.TempDir()
	if err := os.MkdirAll(filepath.Join(vdb, "app-misc", "hello-1.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{vdb: vdb}
	for _, tc := range []struct {
		cpv     string
		want    bool
		wantErr bool
	}{
		{"app-misc/hello-1.0", true, false},
		{"app-misc/hello-2.0", false, false},
		{"dev-libs/gone-1", false, false},
		{"../etc", false, true},
		{"app-misc/..", false, true},
		{"hello-1.0", false, true},
	} {
		got, err := d.stillInstalled(tc.cpv)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("stillInstalled(%q) = %v, %v; want %v, error %v", tc.cpv, got, err, tc.want, tc.wantErr)
		}
	}
}
