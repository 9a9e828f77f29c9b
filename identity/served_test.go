package identity

import (
	"bytes"
	"compress/bzip2"
	"io"
	"strings"
	"testing"

	dbzip2 "github.com/dsnet/compress/bzip2"

	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

func bz(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := dbzip2.NewWriter(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCanonicalEnvironmentStripsHostVarying: what the digest leaves out
// (host-varying variables, where an attacker could hide a PORTAGE_BASHRC or
// a PATH) is removed before portage sees the environment, and the digest of
// the rewritten metadata is unchanged.
func TestServedEnvironmentStripsHostVarying(t *testing.T) {
	env := "declare -x HOME=\"/home/builder\"\n" +
		"declare -x PORTAGE_BASHRC=\"/tmp/evil.sh\"\n" +
		"declare -- SLOT=\"0\"\n" +
		"pkg_postinst () \n{ \n    elog \"hello\"\n}\n"
	raw := bz(t, env)
	out, err := ServedValue(environmentKey, raw)
	if err != nil {
		t.Fatal(err)
	}
	text, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(out)))
	if err != nil {
		t.Fatalf("served environment.bz2 is not bzip2 portage can read: %v", err)
	}
	for _, gone := range []string{"HOME=", "PORTAGE_BASHRC", "/tmp/evil.sh"} {
		if strings.Contains(string(text), gone) {
			t.Errorf("served environment still contains %q:\n%s", gone, text)
		}
	}
	for _, kept := range []string{"SLOT=", "pkg_postinst", "elog \"hello\""} {
		if !strings.Contains(string(text), kept) {
			t.Errorf("served environment lost %q:\n%s", kept, text)
		}
	}
	m := map[string][]byte{"CATEGORY": []byte("app-misc\n"), "PF": []byte("x-1\n"), "SLOT": []byte("0\n"), environmentKey: raw}
	before, err := MetadataDigest(xpak.NewMetadata(m))
	if err != nil {
		t.Fatal(err)
	}
	m[environmentKey] = out
	m["SLOT"], _ = ServedValue("SLOT", []byte("  0 \n\n"))
	after, err := MetadataDigest(xpak.NewMetadata(m))
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Error("canonical rewrite changed the metadata digest")
	}
}

// TestCanonicalValues: every key but the environment is rewritten exactly
// as the digest reads it; an environment that is not bzip2 is refused, not
// passed through to portage.
func TestServedValues(t *testing.T) {
	for _, tc := range []struct{ key, raw string }{
		{"SLOT", "  0 \n\n"},
		{"USE", "amd64  bar\tkernel_linux\n"},
		{"DESCRIPTION", "A hello\n"},
	} {
		got, err := ServedValue(tc.key, []byte(tc.raw))
		if err != nil {
			t.Fatalf("%s: %v", tc.key, err)
		}
		if want := CanonicalValue(tc.key, []byte(tc.raw)); !bytes.Equal(got, want) {
			t.Errorf("%s: Canonical = %q, want the digest's %q", tc.key, got, want)
		}
	}
	if _, err := ServedValue(environmentKey, []byte("declare -x PATH=/evil\n")); err == nil {
		t.Error("an environment.bz2 that is not bzip2 was accepted")
	}
}
