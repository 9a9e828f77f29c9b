package trust

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

func TestDetectEquivocation(t *testing.T) {
	bk := testCID(t, "hello")
	other := testCID(t, "other")
	atts := []*Signed{
		signAs(t, 1, testAttestation(t, bk, testContent("A"))),
		signAs(t, 1, testAttestation(t, bk, testContent("A"))), // same content again: fine
		signAs(t, 2, testAttestation(t, bk, testContent("A"))),
		signAs(t, 2, testAttestation(t, bk, testContent("B"))), // equivocation
		signAs(t, 2, testAttestation(t, bk, testContent("C"))), // still one record
		signAs(t, 3, testAttestation(t, bk, testContent("A"))),
		signAs(t, 3, testAttestation(t, other, testContent("B"))), // different build keys: fine
		nil,
	}
	// A forged record cannot frame peer 3: tampered in memory.
	forged := signAs(t, 3, testAttestation(t, bk, testContent("A")))
	forged.Attestation.Content = testContent("Z")
	atts = append(atts, forged)

	found := DetectEquivocation(atts)
	if len(found) != 1 {
		t.Fatalf("found %d records, want 1: %+v", len(found), found)
	}
	e := found[0]
	if e.Peer != testPeer(t, 2) || e.BuildKey != bk {
		t.Fatalf("record names %s / %s", e.Peer, e.BuildKey)
	}
	if err := e.Verify(); err != nil {
		t.Fatal(err)
	}
	// Deterministic: same input in another order gives the same proof.
	rev := make([]*Signed, len(atts))
	for i := range atts {
		rev[len(atts)-1-i] = atts[i]
	}
	again := DetectEquivocation(rev)
	if len(again) != 1 || again[0].ID() != e.ID() {
		t.Fatal("detection is not deterministic")
	}

	raw := e.Marshal()
	back, err := DecodeEquivocation(raw)
	if err != nil {
		t.Fatal(err)
	}
	if back.Peer != e.Peer || back.BuildKey != e.BuildKey || back.ID() != e.ID() || !bytes.Equal(back.Marshal(), raw) {
		t.Fatal("evidence round trip changed it")
	}
	swapped := Equivocation{Peer: e.Peer, BuildKey: e.BuildKey, A: e.B, B: e.A}
	if !bytes.Equal(swapped.Marshal(), raw) {
		t.Fatal("evidence encoding depends on A/B order")
	}
}

func TestEquivocationVerifyRejectsForgeries(t *testing.T) {
	bk := testCID(t, "hello")
	good := proof(t, 1, bk, "A", "B")
	cases := map[string]func(e *Equivocation){
		"same content": func(e *Equivocation) { e.B = signAs(t, 1, testAttestation(t, bk, testContent("A"))) },
		"two peers":    func(e *Equivocation) { e.B = signAs(t, 2, testAttestation(t, bk, testContent("B"))) },
		"two build keys": func(e *Equivocation) {
			e.B = signAs(t, 1, testAttestation(t, testCID(t, "other"), testContent("B")))
		},
		"wrong peer named":      func(e *Equivocation) { e.Peer = testPeer(t, 2) },
		"wrong build key named": func(e *Equivocation) { e.BuildKey = testCID(t, "other") },
		"tampered attestation": func(e *Equivocation) {
			b := *e.B
			b.Attestation.Content = testContent("C")
			e.B = &b
		},
		"missing attestation": func(e *Equivocation) { e.A = nil },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			e := good
			mod(&e)
			if err := e.Verify(); !errors.Is(err, ErrInvalidEvidence) {
				t.Fatalf("Verify = %v", err)
			}
		})
	}

	// Wire forgeries: a record whose second attestation was re-signed by
	// someone else, or altered, must not decode.
	wire := func(a, b []byte, version int) []byte {
		raw, err := json.Marshal(equivocationWire{Version: version, A: a, B: b})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	a, b := good.A.Marshal(), good.B.Marshal()
	altered := bytes.Replace(b, []byte(`"signature":"`), []byte(`"signature":"AA`), 1)
	other := signAs(t, 2, testAttestation(t, bk, testContent("B"))).Marshal()
	for name, tc := range map[string]struct {
		raw  []byte
		want error
	}{
		"other signer":     {wire(a, other, 1), ErrInvalidEvidence},
		"altered":          {wire(a, altered, 1), ErrInvalidEvidence},
		"same twice":       {wire(a, a, 1), ErrInvalidEvidence},
		"version":          {wire(a, b, 2), ErrUnsupportedVersion},
		"unknown field":    {[]byte(`{"version":1,"a":` + string(a) + `,"b":` + string(b) + `,"peer":"x"}`), ErrMalformed},
		"oversized":        {bytes.Repeat([]byte(" "), MaxEvidenceSize+1), ErrMalformed},
		"not json":         {[]byte("{"), ErrMalformed},
		"valid (sanity)":   {wire(a, b, 1), nil},
		"valid swapped AB": {wire(b, a, 1), nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeEquivocation(tc.raw)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("DecodeEquivocation = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEndorsement(t *testing.T) {
	bk := testCID(t, "hello")
	c := testContent("A")
	e := Endorse(bk, c, signerKey(1))
	signers := [][]ed25519.PublicKey{{signerPub(1)}, {signerPub(2), signerPub(1)}}
	for _, s := range signers {
		if err := e.VerifyBy(bk, c, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.VerifyBy(bk, c, []ed25519.PublicKey{signerPub(2)}); !errors.Is(err, ErrUntrustedSigner) {
		t.Fatalf("untrusted signer: %v", err)
	}
	cases := map[string]struct {
		e    Endorsement
		bk   keys.Build
		c    ContentID
		want error
	}{
		"other content":   {e, bk, testContent("B"), ErrBadSignature},
		"other build key": {e, testCID(t, "other"), c, ErrBadSignature},
		"swapped key":     {Endorsement{SignerKey: signerPub(2), Signature: e.Signature}, bk, c, ErrBadSignature},
		"short key":       {Endorsement{SignerKey: signerPub(1)[:31], Signature: e.Signature}, bk, c, ErrMalformed},
		"short signature": {Endorsement{SignerKey: signerPub(1), Signature: e.Signature[:63]}, bk, c, ErrMalformed},
	}
	for name, tc := range cases {
		if err := tc.e.Verify(tc.bk, tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back Endorsement
	if err := json.Unmarshal(raw, &back); err != nil || back.Verify(bk, c) != nil {
		t.Fatalf("endorsement JSON round trip: %v", err)
	}
}
