package keys

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func testCID(t *testing.T) cid.Cid {
	t.Helper()
	h, err := mh.Sum([]byte("gentoo-p2p build v1\n"), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

func TestRoundTrip(t *testing.T) {
	c := testCID(t)
	bk, vk := BuildFromCID(c), VariantFromCID(c)
	if bk.String() != c.String() || vk.String() != c.String() {
		t.Fatalf("keys %s / %s, want the CID string %s", bk, vk, c)
	}
	for _, got := range []func() (cid.Cid, error){bk.CID, vk.CID} {
		if back, err := got(); err != nil || !back.Equals(c) {
			t.Errorf("CID() = %s, %v; want %s", back, err, c)
		}
	}
	if p, err := ParseBuild(c.String()); err != nil || p != bk {
		t.Errorf("ParseBuild = %q, %v", p, err)
	}
	if p, err := ParseVariant(c.String()); err != nil || p != vk {
		t.Errorf("ParseVariant = %q, %v", p, err)
	}
}

// The JSON of a key is the plain CID string: records and the wire format
// are the same as when keys were strings.
func TestJSONIsTheString(t *testing.T) {
	bk := BuildFromCID(testCID(t))
	b, err := json.Marshal(struct {
		B Build   `json:"b"`
		V Variant `json:"v"`
	}{bk, Variant(bk)})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(struct {
		B string `json:"b"`
		V string `json:"v"`
	}{string(bk), string(bk)})
	if string(b) != string(want) {
		t.Errorf("JSON %s, want %s", b, want)
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "not-a-cid", "app-misc/hello-1.0"} {
		if _, err := ParseBuild(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseBuild(%q): %v, want ErrInvalid", s, err)
		}
		if _, err := ParseVariant(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseVariant(%q): %v, want ErrInvalid", s, err)
		}
		if _, err := Build(s).CID(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Build(%q).CID(): %v, want ErrInvalid", s, err)
		}
	}
}

// ParseBuild returns the canonical spelling, so one build never has two.
func TestParseCanonical(t *testing.T) {
	c := testCID(t)
	upper, err := c.StringOfBase('B') // base32 upper
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ParseBuild(upper); err != nil || p != BuildFromCID(c) {
		t.Errorf("ParseBuild(%s) = %q, %v; want %s", upper, p, err, c)
	}
}
