package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/multiformats/go-multihash"
)

// demandDescriptor stands in for identity's descriptor JSON (trust cannot
// import identity); demandBinder derives its keys the way the daemon's
// binder does from a real one: by hashing what it says.
const demandDescriptor = `{"cpv":"app-misc/hello-1.0","use":["nls"],"chost":"x86_64-pc-linux-gnu","cflags":"-O2 -pipe"}`

func demandBinder(raw json.RawMessage) (keys.Variant, string, string, error) {
	var d struct {
		CPV    string   `json:"cpv"`
		USE    []string `json:"use"`
		CHOST  string   `json:"chost"`
		CFLAGS string   `json:"cflags"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return "", "", "", err
	}
	sum := sha256.Sum256([]byte(d.CPV + "\x00" + strings.Join(d.USE, " ") + "\x00" + d.CHOST + d.CFLAGS))
	return keys.Variant(testCIDBytes(sum[:])), d.CPV, d.CHOST + "-" + d.CFLAGS, nil
}

// testCIDBytes is a canonical CID over b.
func testCIDBytes(b []byte) keys.Build {
	mh, err := multihash.Sum(b, multihash.SHA2_256, -1)
	if err != nil {
		panic(err) // a fixed, registered code
	}
	return keys.BuildFromCID(cid.NewCidV1(cid.Raw, mh))
}

func testDemand(t testing.TB, descriptor string) Demand {
	t.Helper()
	vk, cpv, platform, err := demandBinder(json.RawMessage(descriptor))
	if err != nil {
		t.Fatal(err)
	}
	return Demand{
		VariantKey: vk, CPV: cpv, Platform: platform, Descriptor: json.RawMessage(descriptor),
		Kind: DemandSource, Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
	}
}

func TestDemandSignDecodeBind(t *testing.T) {
	// An indented descriptor is compacted before signing, so the payload
	// is canonical and decodes.
	var indented bytes.Buffer
	if err := json.Indent(&indented, []byte(demandDescriptor), "", "  "); err != nil {
		t.Fatal(err)
	}
	d := testDemand(t, indented.String())
	d.Time = d.Time.In(time.FixedZone("CET", 3600)).Add(400 * time.Millisecond)
	s, err := SignDemand(d, testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDemand(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got.Attester != testPeer(t, 1) || got.ID() != s.ID() {
		t.Fatalf("decoded as %s / %x", got.Attester, got.ID())
	}
	if got.Demand.Time != time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC) || got.Demand.Version != DemandVersion {
		t.Fatalf("time %s version %d", got.Demand.Time, got.Demand.Version)
	}
	if string(got.Demand.Descriptor) != demandDescriptor {
		t.Fatalf("descriptor %s", got.Demand.Descriptor)
	}
	if err := got.Demand.Bind(demandBinder); err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(); err != nil {
		t.Fatal(err)
	}
	// A demand is not an attestation: its signature does not carry over.
	if _, err := Decode(s.Marshal()); err == nil {
		t.Fatal("a signed demand decoded as an attestation")
	}
}

func TestDemandBindRejectsRelabel(t *testing.T) {
	d := testDemand(t, demandDescriptor)
	other := testDemand(t, strings.Replace(demandDescriptor, `"nls"`, `"X"`, 1))
	for _, tc := range []struct {
		name string
		edit func(*Demand)
	}{
		{"variant key of another USE", func(d *Demand) { d.VariantKey = other.VariantKey }},
		{"other cpv", func(d *Demand) { d.CPV = "app-misc/other-1.0" }},
		{"other platform", func(d *Demand) { d.Platform = "x86_64-pc-linux-gnu-deadbeef" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := d
			tc.edit(&bad)
			s, err := SignDemand(bad, testKey(t, 1))
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeDemand(s.Marshal())
			if err != nil {
				t.Fatal(err) // well-formed; only Bind can tell
			}
			if err := got.Demand.Bind(demandBinder); !errors.Is(err, ErrUnboundDescriptor) {
				t.Fatalf("Bind = %v, want ErrUnboundDescriptor", err)
			}
		})
	}
}

func TestDecodeDemandRejects(t *testing.T) {
	good, err := SignDemand(testDemand(t, demandDescriptor), testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	resignDemand := func(payload []byte, key crypto.PrivKey) []byte {
		sig, err := key.Sign(signingBytes(DemandDomain, payload))
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := crypto.MarshalPublicKey(key.GetPublic())
		raw, _ := json.Marshal(signedWire{Payload: payload, PublicKey: pub, Signature: sig})
		return raw
	}
	with := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good.Payload, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return resignDemand(b, testKey(t, 1))
	}
	tampered := func(f func(w *signedWire)) []byte {
		w := signedWire{Payload: bytes.Clone(good.Payload), PublicKey: bytes.Clone(good.PublicKey), Signature: bytes.Clone(good.Signature)}
		f(&w)
		raw, _ := json.Marshal(w)
		return raw
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"oversized", bytes.Repeat([]byte(" "), MaxSignedDemandSize+1), ErrMalformed},
		{"tampered kind", tampered(func(w *signedWire) {
			w.Payload = bytes.Replace(w.Payload, []byte(`"source"`), []byte(`"binary"`), 1)
		}), ErrBadSignature},
		{"flipped signature bit", tampered(func(w *signedWire) { w.Signature[3] ^= 1 }), ErrBadSignature},
		{"signed as an attestation", tampered(func(w *signedWire) {
			w.Signature, _ = testKey(t, 1).Sign(signingBytes(AttestationDomain, w.Payload))
		}), ErrBadSignature},
		{"unknown field", with(func(m map[string]any) { m["weight"] = 100 }), ErrMalformed},
		{"version 2", with(func(m map[string]any) { m["version"] = 2 }), ErrUnsupportedVersion},
		{"unknown kind", with(func(m map[string]any) { m["kind"] = "urgent" }), ErrMalformed},
		{"no descriptor", with(func(m map[string]any) { delete(m, "descriptor") }), ErrMalformed},
		{"descriptor not an object", with(func(m map[string]any) { m["descriptor"] = []int{1} }), ErrMalformed},
		{"variant key not a CID", with(func(m map[string]any) { m["variant_key"] = "hello" }), ErrMalformed},
		{"cpv without category", with(func(m map[string]any) { m["cpv"] = "hello-1.0" }), ErrMalformed},
		{"newline in platform", with(func(m map[string]any) { m["platform"] = "x\ny" }), ErrMalformed},
		{"time with offset", with(func(m map[string]any) { m["time"] = "2026-12-01T11:00:00+01:00" }), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := DecodeDemand(tc.raw); !errors.Is(err, tc.want) {
				t.Fatalf("DecodeDemand = %v, %v; want %v", s, err, tc.want)
			}
		})
	}
}

func TestSignedDemandVerifyNoticesTampering(t *testing.T) {
	s, err := SignDemand(testDemand(t, demandDescriptor), testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	s.Demand.Kind = DemandWanted
	if err := s.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("edited kind: %v", err)
	}
	s.Demand.Kind = DemandSource
	s.Attester = testPeer(t, 2)
	if err := s.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other attester: %v", err)
	}
}
