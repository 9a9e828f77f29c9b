package trust

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// FuzzParseContentID checks that a content id has one text: whatever
// parses prints as exactly the input.
func FuzzParseContentID(f *testing.F) {
	const consumer = "29f00dbea91415b17c9f1a8c8970204610dd754d710a1ca8448f8b37a4cefa8a.ef538baa8a276b10852ba48c00ad5ca37a617e52c00f553a1133d387f6129322"
	f.Add(consumer)
	f.Add(strings.ToUpper(consumer))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseContentID(s)
		if err != nil {
			return
		}
		if c.String() != s {
			t.Fatalf("%q parsed but prints as %q", s, c.String())
		}
	})
}

// FuzzDecodeAttestation feeds arbitrary envelopes to Decode, seeded from the
// real signed attestations in testdata/attestations. Whatever decodes must
// verify, re-encode to bytes that decode to the same record, and keep its ID.
func FuzzDecodeAttestation(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "attestations", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed attestations: %v", err)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"payload":"","public_key":"","signature":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := Decode(raw)
		if err != nil {
			return
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("decoded record does not verify: %v", err)
		}
		again, err := Decode(s.Marshal())
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if again.ID() != s.ID() || again.Attester != s.Attester || !bytes.Equal(again.Payload, s.Payload) {
			t.Fatal("re-encoding changed the record")
		}
	})
}

// FuzzDecodeEquivocation feeds arbitrary evidence records to
// DecodeEquivocation; whatever decodes must verify and re-encode stably.
func FuzzDecodeEquivocation(f *testing.F) {
	p := proof(f, 1, testCID(f, "hello"), "A", "B")
	f.Add(p.Marshal())
	f.Add([]byte(`{"version":1,"a":{},"b":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := DecodeEquivocation(raw)
		if err != nil {
			return
		}
		if err := e.Verify(); err != nil {
			t.Fatalf("decoded evidence does not verify: %v", err)
		}
		back, err := DecodeEquivocation(e.Marshal())
		if err != nil || back.ID() != e.ID() {
			t.Fatalf("re-encoded evidence: %v", err)
		}
	})
}

// FuzzParseManifest feeds arbitrary signed Manifest text to the parser; it
// must never panic, and what it accepts has sane records.
func FuzzParseManifest(f *testing.F) {
	for _, file := range []string{"testdata/gpkg/signed/hello-1.0-1.gpkg.tar", "testdata/gpkg/unsigned/hello-1.0-xz.gpkg.tar"} {
		for _, m := range readMembers(f, file) {
			if filepath.Base(m.name) == "Manifest" {
				f.Add(m.data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		recs, err := parseManifest(text)
		if err != nil {
			return
		}
		for name, r := range recs {
			if name == "" || r.size < 0 || len(r.hashes) == 0 {
				t.Fatalf("accepted bad record %q: %+v", name, r)
			}
		}
	})
}

// FuzzVerifyGPKG feeds arbitrary containers to VerifyGPKGSignatures, seeded
// with the real signed and unsigned fixtures. It must never panic, and every
// refusal must carry one of the documented sentinels, so callers can always
// tell "unsigned" from "tampered" from "unknown key" from "malformed".
func FuzzVerifyGPKG(f *testing.F) {
	files, _ := filepath.Glob("testdata/gpkg/*/*.gpkg.tar")
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	kr, err := LoadKeyring(fixtureKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		file := filepath.Join(t.TempDir(), "f.gpkg.tar")
		if err := os.WriteFile(file, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		err := VerifyGPKGSignatures(file, kr)
		if err == nil {
			return
		}
		for _, sentinel := range []error{ErrUnsigned, ErrBadPGPSignature, ErrUntrustedKey, ErrMalformedGPKG} {
			if errors.Is(err, sentinel) {
				return
			}
		}
		t.Fatalf("refusal without a sentinel: %v", err)
	})
}

// FuzzDecodeDemand feeds arbitrary envelopes to DecodeDemand, seeded with
// a real signed demand. Whatever decodes must verify and re-encode to the
// same record.
func FuzzDecodeDemand(f *testing.F) {
	good, err := SignDemand(testDemand(f, demandDescriptor), testKey(f, 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.Marshal())
	f.Add(good.Payload)
	f.Add([]byte(`{"payload":"","public_key":"","signature":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := DecodeDemand(raw)
		if err != nil {
			return
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("decoded demand does not verify: %v", err)
		}
		again, err := DecodeDemand(s.Marshal())
		if err != nil {
			t.Fatalf("re-encoded demand does not decode: %v", err)
		}
		if again.ID() != s.ID() || again.Attester != s.Attester || !bytes.Equal(again.Payload, s.Payload) {
			t.Fatal("re-encoding changed the demand")
		}
	})
}

// FuzzDecodeVouch feeds arbitrary envelopes to DecodeVouch, seeded with a
// real signed vouch and a revocation. Whatever decodes must verify,
// re-encode to the same bytes, and never vouch for its own signer.
func FuzzDecodeVouch(f *testing.F) {
	f.Add(signVouch(f, 1, 2, vouchT0, 30*24*time.Hour).Marshal())
	f.Add(signVouch(f, 3, 4, vouchT0, 0).Marshal())
	f.Add([]byte(`{"payload":"","public_key":"","signature":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := DecodeVouch(raw)
		if err != nil {
			return
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("decoded vouch does not verify: %v", err)
		}
		if string(s.Marshal()) != string(raw) {
			t.Fatalf("decoded vouch re-encodes differently")
		}
		if s.Voucher == s.Vouch.Vouchee {
			t.Fatalf("self-vouch decoded")
		}
	})
}

// FuzzDecodePGPVouch feeds arbitrary envelopes to DecodePGPVouch against
// a keyring of one key, seeded with a vouch that key signed. Whatever
// decodes names that key and re-encodes to the same bytes.
func FuzzDecodePGPVouch(f *testing.F) {
	dev := pgpKey(f, "dev")
	blob, err := SignPGPVouch(Vouch{Vouchee: testPeer(f, 2), Issued: vouchT0, Expires: vouchT0.Add(time.Hour)}, dev)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(blob)
	f.Add([]byte(`{"payload":"","signature":""}`))
	keyring := openpgp.EntityList{dev}
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := DecodePGPVouch(raw, keyring)
		if err != nil {
			return
		}
		if p.Voucher != PGPVoucher(dev) || !bytes.Equal(p.Marshal(), raw) {
			t.Fatalf("decoded OpenPGP vouch by %q re-encodes differently", p.Voucher)
		}
	})
}
