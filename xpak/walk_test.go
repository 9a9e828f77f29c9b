package xpak

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestWalkImage checks WalkImage yields normalised entries in tar order,
// with content, and returns the callback's error naming the entry.
func TestWalkImage(t *testing.T) {
	raw := buildTar(t, []tentry{
		{name: "image", typ: tar.TypeDir, mode: 0o755},
		{name: "image/usr/", typ: tar.TypeDir, mode: 0o755},
		{name: "image/usr/bin/tool", mode: 0o755, body: "#!/bin/sh\n"},
		{name: "image/usr/bin/alias", typ: tar.TypeLink, link: "image/usr/bin/tool"},
		{name: "image/usr/bin/sym", typ: tar.TypeSymlink, mode: 0o777, link: "tool"},
	})
	var got []string
	err := WalkImage(bytes.NewReader(zstdBytes(t, raw)), FormatGPKG, DefaultLimits(), func(e ImageEntry, r io.Reader) error {
		body, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		got = append(got, string(e.Type)+" "+e.Name+" "+e.Linkname+" "+string(body))
		return nil
	})
	want := []string{"d usr  ", "f usr/bin/tool  #!/bin/sh\n", "h usr/bin/alias usr/bin/tool ", "l usr/bin/sym tool "}
	if err != nil || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%v\n got %q\nwant %q", err, got, want)
	}

	// The digest from a walk that reads part of each file equals the
	// plain digest: unread content is still hashed.
	plain, _, err := ImageDigest(bytes.NewReader(raw), FormatGPKG, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	walked, _, err := WalkImageDigest(bytes.NewReader(raw), FormatGPKG, DefaultLimits(), func(e ImageEntry, r io.Reader) error {
		var one [1]byte
		r.Read(one[:])
		return nil
	})
	if err != nil || walked != plain {
		t.Fatalf("partial-read walk digest %x, plain %x (%v)", walked, plain, err)
	}

	stop := errors.New("stop here")
	err = WalkImage(bytes.NewReader(raw), FormatGPKG, DefaultLimits(), func(e ImageEntry, r io.Reader) error {
		if e.Type == TypeHardlink {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !strings.Contains(err.Error(), "usr/bin/alias") {
		t.Fatalf("callback error: %v", err)
	}
}

// TestNoGoroutineLeak: the read-ahead goroutine is gone after every
// outcome — success, hostile input, bomb, callback error.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	big := make([]tentry, 0, 40)
	for i := range 40 {
		big = append(big, tentry{name: "./f" + strings.Repeat("x", i), body: strings.Repeat("y", 64<<10)})
	}
	payload := zstdBytes(t, buildTar(t, big))
	// A GPKG large enough for the asynchronous Manifest hashing.
	rnd := make([]byte, 2<<20)
	rand.New(rand.NewSource(5)).Read(rnd)
	gtar := buildTar(t, []tentry{{name: "image/big", body: string(rnd)}, {name: "image/small", body: "s"}})
	std := standardMembers(t, gtar, baseMetadata())
	gpkg := buildGPKG(t, "big-1.0", std, nil)
	tampered := bytes.Clone(gpkg)
	tampered[len(tampered)/2] ^= 1
	want, _, err := ImageDigest(bytes.NewReader(gtar), FormatGPKG, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if len(std[2].data) < asyncThreshold {
		t.Fatalf("image member of %d bytes does not exercise the asynchronous path", len(std[2].data))
	}
	lim := DefaultLimits()
	for range 5 {
		if p, err := readBytes(gpkg, lim); err != nil || p.ImageDigest != want {
			t.Fatalf("large gpkg: %v", err)
		}
		if _, err := readBytes(tampered, lim); err == nil {
			t.Fatal("tampered large gpkg accepted")
		}
		ImageDigest(bytes.NewReader(payload), FormatXPAK, lim)
		WalkImage(bytes.NewReader(payload), FormatXPAK, lim, func(ImageEntry, io.Reader) error { return errors.New("quit") })
		ImageDigest(bytes.NewReader(payload[:len(payload)/2]), FormatXPAK, lim)
		small := lim
		small.MaxImageBytes = 1 << 20
		ImageDigest(bytes.NewReader(payload), FormatXPAK, small)
		for _, p := range fixtureFiles(t)[:6] {
			ReadFile(p, lim)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}
