package identity

import (
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Golden content id of app-misc/consumer-1.0 (gpkg/zstd-multi-instance):
// image digest v1 from xpak, metadata digest v1 from this package, in the
// text form of trust.ContentID. Every honest build of the consumer has it;
// docs/PROTOCOL.md quotes it.
const (
	consumerMetadataDigest = "ef538baa8a276b10852ba48c00ad5ca37a617e52c00f553a1133d387f6129322"
	consumerContentID      = "29f00dbea91415b17c9f1a8c8970204610dd754d710a1ca8448f8b37a4cefa8a.ef538baa8a276b10852ba48c00ad5ca37a617e52c00f553a1133d387f6129322"
)

func TestContentIDGolden(t *testing.T) {
	p, err := xpak.ReadFile(filepath.Join(fixtures, consumerGPKG), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	md := mustDigest(t, p.Metadata)
	if got := hex.EncodeToString(md[:]); got != consumerMetadataDigest {
		t.Errorf("metadata digest %s, want %s", got, consumerMetadataDigest)
	}
	c := trust.ContentID{Image: p.ImageDigest, Metadata: md}
	if got := c.String(); got != consumerContentID {
		t.Errorf("content id %s, want %s", got, consumerContentID)
	}
	// The XPAK of the same build has the same content id.
	px, err := xpak.ReadFile(filepath.Join(fixtures, consumerXPAK), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if cx := (trust.ContentID{Image: px.ImageDigest, Metadata: mustDigest(t, px.Metadata)}); cx != c {
		t.Errorf("XPAK content id %s differs from GPKG %s", cx, c)
	}
}
