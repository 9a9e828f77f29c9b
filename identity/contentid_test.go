package identity

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Golden content id of app-misc/consumer-1.0 (gpkg/zstd-multi-instance):
// image digest v1 from xpak, metadata digest v1 from this package. Every
// honest build of the consumer has it; docs/PROTOCOL.md quotes it.
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
	c := ContentID{Image: p.ImageDigest, Metadata: md}
	if got := c.String(); got != consumerContentID {
		t.Errorf("content id %s, want %s", got, consumerContentID)
	}
	// The XPAK of the same build has the same content id.
	px, err := xpak.ReadFile(filepath.Join(fixtures, consumerXPAK), xpak.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if cx := (ContentID{Image: px.ImageDigest, Metadata: mustDigest(t, px.Metadata)}); cx != c {
		t.Errorf("XPAK content id %s differs from GPKG %s", cx, c)
	}
}

func TestContentIDText(t *testing.T) {
	var c ContentID
	for i := range c.Image {
		c.Image[i] = byte(i)
		c.Metadata[i] = byte(0xff - i)
	}
	s := c.String()
	if len(s) != 129 || s[64] != '.' || s != strings.ToLower(s) {
		t.Fatalf("String() = %q", s)
	}
	back, err := ParseContentID(s)
	if err != nil || back != c {
		t.Fatalf("ParseContentID: %v, %v", back, err)
	}
	b, err := json.Marshal(map[string]ContentID{"c": c})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"c":"`+s+`"}` {
		t.Errorf("JSON %s", b)
	}
	var m map[string]ContentID
	if err := json.Unmarshal(b, &m); err != nil || m["c"] != c {
		t.Errorf("JSON round trip: %v %v", m, err)
	}
	if c.IsZero() || !(ContentID{}).IsZero() {
		t.Error("IsZero")
	}
	for _, bad := range []string{
		"",
		s[:128],
		s + "0",
		strings.ToUpper(s),
		s[:64] + ":" + s[65:],
		"g" + s[1:],
		s[:64] + "." + s[:64],
		s[:64] + ".0x" + s[67:],
	} {
		if bad == s[:64]+"."+s[:64] {
			// well-formed (two equal halves): must parse
			if _, err := ParseContentID(bad); err != nil {
				t.Errorf("%q: %v", bad, err)
			}
			continue
		}
		if _, err := ParseContentID(bad); !errors.Is(err, ErrBadContentID) {
			t.Errorf("ParseContentID(%q) = %v", bad, err)
		}
	}
}
