package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole demo: five daemons on loopback, the trust
// verdicts, the gateway index and a download verified like portage does.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := Run(ctx, &out, Options{Dir: t.TempDir(), Timeout: 90 * time.Second}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"app-misc/hello-1.0       ALLOWED",
		"app-misc/layout-1.0-r1   DISPUTED",
		"0 bytes fetched so far); absent: app-misc/layout-1.0-r1 (disputed)",
		"image and metadata digests = the agreed content; every member signed",
		"CPV: app-misc/hello-1.0",
		"rebuild disagrees: content ",
		"metadata: function pkg_postinst added, key DEFINED_PHASES differs",
		"demo complete",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
