package xpak

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// ImagePayload finds, in every fixture, the payload whose image digest
// and format ReadFile reported; what is no binpkg is refused.
func TestImagePayload(t *testing.T) {
	for _, path := range fixtureFiles(t) {
		p, err := ReadFile(path, DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		payload, format, err := ImagePayload(f, p.Size)
		if err != nil || format != p.Format {
			t.Errorf("%s: ImagePayload format %q, %v; ReadFile %q", path, format, err, p.Format)
			f.Close()
			continue
		}
		sum, n, err := ImageDigest(payload, format, DefaultLimits())
		f.Close()
		if err != nil || sum != p.ImageDigest || n != p.ImageEntries {
			t.Errorf("%s: digest of the payload %x/%d/%v, ReadFile %x/%d", path, sum, n, err, p.ImageDigest, p.ImageEntries)
		}
	}
	gpkgWithoutImage := buildTar(t, []tentry{{name: "p-1/gpkg-1"}, {name: "p-1/metadata.tar", body: "x"}})
	notGPKG := buildTar(t, []tentry{{name: "p-1/README", body: "x"}})
	xpakTooLong := append([]byte("junk"), []byte("XPAKSTOP\xff\xff\xff\xffSTOP")...)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrUnknownFormat},
		{"text", []byte("hello, world\n"), ErrUnknownFormat},
		{"tar that is no gpkg", notGPKG, ErrUnknownFormat},
		{"gpkg without image", gpkgWithoutImage, ErrMissingMember},
		{"xpak trailer longer than the file", xpakTooLong, ErrBadXPAK},
	} {
		_, _, err := ImagePayload(bytes.NewReader(tc.data), int64(len(tc.data)))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
