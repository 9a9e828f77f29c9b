package xpak

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

// fuzzLimits keep every fuzz input cheap: whatever the input claims, the
// reader may not spend more than this.
func fuzzLimits() Limits {
	return Limits{
		MaxImageBytes:    4 << 20,
		MaxMetadataValue: 256 << 10,
		MaxMetadataBytes: 1 << 20,
		MaxEntries:       1000,
		MaxNameBytes:     1 << 20,
		MaxDecoderWindow: 8 << 20,
		// A grace well under MaxImageBytes, so inputs reach the ratio
		// guard too (the fixtures expand at most 59:1).
		MaxCompressionRatio:   500,
		CompressionRatioGrace: 64 << 10,
	}
}

func addFixtureSeeds(f *testing.F, format string) {
	for _, p := range fixtureFiles(f) {
		if !strings.Contains(p, "/"+format+"/") && !strings.Contains(p, "/"+format+"-") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkFuzzResult asserts what must hold for any input: no panic (the
// fuzzer catches that), limits respected, and a typed error.
func checkFuzzResult(t *testing.T, data []byte, p *Package, err error) {
	if err != nil {
		for _, s := range allSentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error wraps no sentinel: %v", err)
	}
	lim := fuzzLimits()
	if p.ImageEntries > lim.MaxEntries {
		t.Fatalf("%d entries over the limit", p.ImageEntries)
	}
	if p.Size != int64(len(data)) {
		t.Fatalf("Size %d of %d bytes", p.Size, len(data))
	}
	var total int
	for _, k := range p.Metadata.Keys() {
		v, _ := p.Metadata.Raw(k)
		if int64(len(v)) > lim.MaxMetadataValue {
			t.Fatalf("value %s of %d bytes", k, len(v))
		}
		total += len(v)
	}
	if int64(total) > lim.MaxMetadataBytes {
		t.Fatalf("metadata of %d bytes", total)
	}
}

func FuzzReadXPAK(f *testing.F) {
	addFixtureSeeds(f, "xpak")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Read(bytes.NewReader(data), int64(len(data)), fuzzLimits())
		checkFuzzResult(t, data, p, err)
	})
}

func FuzzReadGPKG(f *testing.F) {
	addFixtureSeeds(f, "gpkg")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Read(bytes.NewReader(data), int64(len(data)), fuzzLimits())
		checkFuzzResult(t, data, p, err)
	})
}
