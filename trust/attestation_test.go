package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/multiformats/go-multibase"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestSignDecodeRoundTrip(t *testing.T) {
	bk := testCID(t, "build hello")
	a := testAttestation(t, bk, testContent("good"))
	a.Time = time.Date(2026, 11, 21, 5, 0, 0, 999, time.FixedZone("CET", 3600))
	s := signAs(t, 1, a)
	if s.Attester != testPeer(t, 1) {
		t.Fatalf("attester %s, want %s", s.Attester, testPeer(t, 1))
	}
	if got := s.Attestation.Time; got.Location() != time.UTC || got.Nanosecond() != 0 || !got.Equal(a.Time.Truncate(time.Second)) {
		t.Fatalf("time not normalised to UTC seconds: %v", got)
	}
	d, err := Decode(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if d.ID() != s.ID() || d.Attester != s.Attester {
		t.Fatalf("round trip changed identity")
	}
	want, _ := json.Marshal(s.Attestation)
	got, _ := json.Marshal(d.Attestation)
	if !bytes.Equal(want, got) || !bytes.Equal(got, d.Payload) {
		t.Fatalf("round trip changed attestation:\n%s\n%s", want, got)
	}
	if err := d.Verify(); err != nil {
		t.Fatal(err)
	}
	// Attestation's own JSON round trip (used by the API) is strict too.
	var back Attestation
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if back.Content != a.Content || back.FileSHA256 != a.FileSHA256 || back.PieceRoot != a.PieceRoot {
		t.Fatalf("Attestation JSON round trip lost digests")
	}
}

// TestGoldenAttestations pins the wire format: Ed25519 is deterministic, so
// signing the same attestation with the same key gives the same bytes. The
// files also seed FuzzDecodeAttestation.
func TestGoldenAttestations(t *testing.T) {
	bk := testCID(t, "build hello")
	cases := map[string][]byte{
		"hello-peer1.json": signAs(t, 1, testAttestation(t, bk, testContent("good"))).Marshal(),
		"hello-peer2-other-content.json": func() []byte {
			a := testAttestation(t, bk, testContent("evil"))
			a.Format, a.Descriptor, a.Builder = FormatXPAK, nil, Builder{}
			return signAs(t, 2, a).Marshal()
		}(),
		"libfoo-peer3-index.json": func() []byte {
			a := testAttestation(t, testCID(t, "build libfoo"), testContent("libfoo"))
			a.CPV = "dev-libs/libfoo-2.1"
			a.Index = map[string]string{"SLOT": "0/2.1", "PROVIDES": "x86_64: libfoo.so.2", "USE": "amd64 kernel_linux", "RDEPEND": ""}
			return signAs(t, 3, a).Marshal()
		}(),
	}
	for name, want := range cases {
		file := filepath.Join("testdata", "attestations", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, want, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (run go test -run Golden -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: wire format changed:\n got %s\nwant %s", name, got, want)
		}
		if _, err := Decode(got); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestVersion1Decodes: attestations from before the served form are still
// records (votes), with no served sizes.
func TestVersion1Decodes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "attestations", "hello-peer1-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.Attestation.Version != 1 || s.Attestation.Served != (ServedSizes{}) {
		t.Errorf("version %d, served %+v", s.Attestation.Version, s.Attestation.Served)
	}
}

// resign builds an envelope with an arbitrary payload correctly signed by
// key, to show that a valid signature alone does not make a record valid.
func resign(t *testing.T, payload []byte, key crypto.PrivKey) []byte {
	t.Helper()
	sig, err := key.Sign(signingBytes(AttestationDomain, payload))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.MarshalPublicKey(key.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(signedWire{Payload: payload, PublicKey: pub, Signature: sig})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestDecodeRejects(t *testing.T) {
	bk := testCID(t, "build hello")
	good := signAs(t, 1, testAttestation(t, bk, testContent("good")))
	other := signAs(t, 2, testAttestation(t, bk, testContent("good")))
	mutate := func(f func(w *signedWire)) []byte {
		w := signedWire{Payload: bytes.Clone(good.Payload), PublicKey: bytes.Clone(good.PublicKey), Signature: bytes.Clone(good.Signature)}
		f(&w)
		raw, err := json.Marshal(w)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	payloadWith := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good.Payload, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	secp, _, err := crypto.GenerateSecp256k1Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := bk.CID()
	base36, _ := c.StringOfBase(multibase.Base36)

	cases := []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"not json", []byte("hello"), ErrMalformed},
		{"oversized", bytes.Repeat([]byte(" "), MaxSignedSize+1), ErrMalformed},
		{"trailing data", append(good.Marshal(), []byte(" {}")...), ErrMalformed},
		{"unknown envelope field", []byte(strings.Replace(string(good.Marshal()), `{"payload"`, `{"extra":1,"payload"`, 1)), ErrMalformed},
		{"missing signature", mutate(func(w *signedWire) { w.Signature = nil }), ErrMalformed},
		{"tampered payload byte", mutate(func(w *signedWire) {
			w.Payload = bytes.Replace(w.Payload, []byte(`"size":20480`), []byte(`"size":20481`), 1)
		}), ErrBadSignature},
		{"other build key swapped in", mutate(func(w *signedWire) {
			w.Payload = bytes.Replace(w.Payload, []byte(bk), []byte(testCID(t, "build other")), 1)
		}), ErrBadSignature},
		{"signature of another peer", mutate(func(w *signedWire) { w.Signature = other.Signature }), ErrBadSignature},
		{"public key of another peer", mutate(func(w *signedWire) { w.PublicKey = other.PublicKey }), ErrBadSignature},
		{"flipped signature bit", mutate(func(w *signedWire) { w.Signature[10] ^= 1 }), ErrBadSignature},
		{"signature without domain", mutate(func(w *signedWire) {
			w.Signature, _ = testKey(t, 1).Sign(w.Payload)
		}), ErrBadSignature},
		{"secp256k1 key", resign(t, good.Payload, secp), ErrUnsupportedKey},
		{"garbage key", mutate(func(w *signedWire) { w.PublicKey = []byte{1, 2, 3} }), ErrMalformed},
		{"non-canonical payload (indented)", resign(t, func() []byte {
			var out bytes.Buffer
			_ = json.Indent(&out, good.Payload, "", " ")
			return out.Bytes()
		}(), testKey(t, 1)), ErrMalformed},
		{"unknown payload field", resign(t, payloadWith(func(m map[string]any) { m["extra"] = true }), testKey(t, 1)), ErrMalformed},
		{"version 3", resign(t, payloadWith(func(m map[string]any) { m["version"] = 3 }), testKey(t, 1)), ErrUnsupportedVersion},
		{"build key in base36", resign(t, payloadWith(func(m map[string]any) { m["build_key"] = base36 }), testKey(t, 1)), ErrMalformed},
		{"build key not a CID", resign(t, payloadWith(func(m map[string]any) { m["build_key"] = "sha256:abc" }), testKey(t, 1)), ErrMalformed},
		{"uppercase content hex", resign(t, payloadWith(func(m map[string]any) { m["content"] = strings.ToUpper(m["content"].(string)) }), testKey(t, 1)), ErrMalformed},
		{"short file digest", resign(t, payloadWith(func(m map[string]any) { m["file_sha256"] = "abcd" }), testKey(t, 1)), ErrMalformed},
		{"time with offset", resign(t, payloadWith(func(m map[string]any) { m["time"] = "2026-11-21T05:15:00+01:00" }), testKey(t, 1)), ErrMalformed},
		{"newline in index value", resign(t, payloadWith(func(m map[string]any) { m["index"] = map[string]string{"RDEPEND": "a\nSLOT: 9"} }), testKey(t, 1)), ErrMalformed},
		{"bad index key", resign(t, payloadWith(func(m map[string]any) { m["index"] = map[string]string{"A B": "x"} }), testKey(t, 1)), ErrMalformed},
		{"newline in cpv", resign(t, payloadWith(func(m map[string]any) { m["cpv"] = "app-misc/hello-1.0\ncounted" }), testKey(t, 1)), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Decode(tc.raw)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %v, %v; want %v", s, err, tc.want)
			}
		})
	}
}

// TestRelayCannotImpersonate: whoever re-signs a payload becomes its
// attester; a relay can never make a vote count for someone else.
func TestRelayCannotImpersonate(t *testing.T) {
	bk := testCID(t, "build hello")
	victim := signAs(t, 1, testAttestation(t, bk, testContent("good")))
	s, err := Decode(resign(t, victim.Payload, testKey(t, 9)))
	if err != nil {
		t.Fatal(err)
	}
	if s.Attester != testPeer(t, 9) || s.Attester == victim.Attester {
		t.Fatalf("re-signed payload attributed to %s", s.Attester)
	}
}

func TestSignRejectsInvalid(t *testing.T) {
	bk := testCID(t, "build hello")
	rsa, _, err := crypto.GenerateSecp256k1Key(bytes.NewReader(bytes.Repeat([]byte{3}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Sign(testAttestation(t, bk, testContent("x")), rsa); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("non-Ed25519 key: %v", err)
	}
	cases := []struct {
		name string
		mod  func(a *Attestation)
		want error
	}{
		{"version", func(a *Attestation) { a.Version = 7 }, ErrUnsupportedVersion},
		{"no build key", func(a *Attestation) { a.BuildKey = "" }, ErrMalformed},
		{"no variant key", func(a *Attestation) { a.VariantKey = "" }, ErrMalformed},
		{"no cpv", func(a *Attestation) { a.CPV = "" }, ErrMalformed},
		{"cpv without category", func(a *Attestation) { a.CPV = "hello-1.0" }, ErrMalformed},
		{"no platform", func(a *Attestation) { a.Platform = "" }, ErrMalformed},
		{"descriptor not an object", func(a *Attestation) { a.Descriptor = []byte(`[1]`) }, ErrMalformed},
		{"descriptor invalid", func(a *Attestation) { a.Descriptor = []byte(`{`) }, ErrMalformed},
		{"zero content", func(a *Attestation) { a.Content = ContentID{} }, ErrMalformed},
		{"zero metadata digest", func(a *Attestation) { a.Content.Metadata = [32]byte{} }, ErrMalformed},
		{"zero file digest", func(a *Attestation) { a.FileSHA256 = [32]byte{} }, ErrMalformed},
		{"zero piece root", func(a *Attestation) { a.PieceRoot = [32]byte{} }, ErrMalformed},
		{"zero size", func(a *Attestation) { a.Size = 0 }, ErrMalformed},
		{"negative piece size", func(a *Attestation) { a.PieceSize = -1 }, ErrMalformed},
		{"format", func(a *Attestation) { a.Format = "tbz2" }, ErrMalformed},
		{"zero time", func(a *Attestation) { a.Time = time.Time{} }, ErrMalformed},
		{"huge descriptor", func(a *Attestation) {
			a.Descriptor = []byte(`{"x":"` + strings.Repeat("a", MaxPayloadSize) + `"}`)
		}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := testAttestation(t, bk, testContent("x"))
			tc.mod(&a)
			if _, err := Sign(a, testKey(t, 1)); !errors.Is(err, tc.want) {
				t.Fatalf("Sign = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestVerifyDetectsInMemoryTampering: a Signed whose parsed fields were
// changed after signing must not pass for the original.
func TestVerifyDetectsInMemoryTampering(t *testing.T) {
	bk := testCID(t, "build hello")
	cases := map[string]func(s *Signed){
		"content":  func(s *Signed) { s.Attestation.Content = testContent("evil") },
		"build":    func(s *Signed) { s.Attestation.BuildKey = testCID(t, "build other") },
		"attester": func(s *Signed) { s.Attester = testPeer(t, 5) },
		"size":     func(s *Signed) { s.Attestation.Size++ },
		"payload":  func(s *Signed) { s.Payload = append([]byte(nil), s.Payload[:len(s.Payload)-1]...) },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			s := signAs(t, 1, testAttestation(t, bk, testContent("good")))
			if err := s.Verify(); err != nil {
				t.Fatal(err)
			}
			mod(s)
			if err := s.Verify(); err == nil {
				t.Fatal("tampered Signed verified")
			}
		})
	}
	var nilSigned *Signed
	if err := nilSigned.Verify(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("nil: %v", err)
	}
}

func TestBind(t *testing.T) {
	bk := testCID(t, "build hello")
	a := testAttestation(t, bk, testContent("good"))
	honest := func(d json.RawMessage) (keys.Build, keys.Variant, string, error) {
		return bk, a.VariantKey, "app-misc/hello-1.0", nil
	}
	if err := a.Bind(honest); err != nil {
		t.Fatal(err)
	}
	cases := map[string]Binder{
		"other build key": func(json.RawMessage) (keys.Build, keys.Variant, string, error) {
			return testCID(t, "glibc"), a.VariantKey, a.CPV, nil
		},
		"other variant": func(json.RawMessage) (keys.Build, keys.Variant, string, error) {
			return bk, testVariant(t, "v"), a.CPV, nil
		},
		"other cpv": func(json.RawMessage) (keys.Build, keys.Variant, string, error) {
			return bk, a.VariantKey, "sys-libs/glibc-2.40", nil
		},
		"parse error": func(json.RawMessage) (keys.Build, keys.Variant, string, error) {
			return "", "", "", errors.New("bad descriptor")
		},
	}
	for name, b := range cases {
		if err := a.Bind(b); !errors.Is(err, ErrUnboundDescriptor) {
			t.Errorf("%s: %v", name, err)
		}
	}
	a.Descriptor = nil
	if err := a.Bind(honest); !errors.Is(err, ErrUnboundDescriptor) {
		t.Errorf("no descriptor: %v", err)
	}
}

func TestContentIDText(t *testing.T) {
	c := testContent("x")
	s := c.String()
	if len(s) != 129 || s[64] != '.' {
		t.Fatalf("String %q", s)
	}
	back, err := ParseContentID(s)
	if err != nil || back != c {
		t.Fatalf("ParseContentID: %v %v", back, err)
	}
	// Two equal halves are well formed.
	if _, err := ParseContentID(s[:64] + "." + s[:64]); err != nil {
		t.Errorf("equal halves: %v", err)
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
	for _, bad := range []string{"", ".", s[:128], strings.ToUpper(s), s + "0", strings.Replace(s, ".", ":", 1),
		"g" + s[1:], s[:64] + ".0x" + s[67:], s[:64] + "." + s[:64] + "." + s[65:]} {
		if _, err := ParseContentID(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseContentID(%q) = %v", bad, err)
		}
	}
}

func TestSignedJSONVerifies(t *testing.T) {
	bk := testCID(t, "build hello")
	s := signAs(t, 1, testAttestation(t, bk, testContent("good")))
	doc, err := json.Marshal(map[string]*Signed{"att": s})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]*Signed
	if err := json.Unmarshal(doc, &back); err != nil {
		t.Fatal(err)
	}
	if back["att"].ID() != s.ID() || back["att"].Attester != s.Attester || back["att"].Attestation.Content != s.Attestation.Content {
		t.Fatal("JSON round trip lost the attestation")
	}
	tampered := bytes.Replace(doc, []byte(`"signature":"`), []byte(`"signature":"AAAA`), 1)
	if err := json.Unmarshal(tampered, &back); !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("tampered JSON: %v", err)
	}
}

// TestVerifyNoticesEveryField: a decoded Signed is verified once, and
// Verify afterwards compares fingerprints instead of checking the
// signature again; changing any field of its Attestation (found by
// reflection, so a field added later is covered), its attester or its
// signed bytes must still fail Verify.
func TestVerifyNoticesEveryField(t *testing.T) {
	bk := testCID(t, "build hello")
	fresh := func(t *testing.T) *Signed {
		t.Helper()
		a := testAttestation(t, bk, testContent("good"))
		a.Index = map[string]string{"SLOT": "0", "USE": "ssl"}
		a.Builder = Builder{Portage: "3.0.82", GCC: "13.2.0"}
		a.Needs = Needs{Glibc: "GLIBC_2.34", X86Level: 2}
		s := signAs(t, 1, a)
		d, err := Decode(s.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Verify(); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, f := range leafFields(reflect.TypeFor[Attestation](), nil, "") {
		t.Run(f.name, func(t *testing.T) {
			s := fresh(t)
			changeValue(t, reflect.ValueOf(&s.Attestation).Elem().FieldByIndex(f.index))
			if err := s.Verify(); err == nil {
				t.Fatalf("Attestation.%s changed in memory, and Verify passed", f.name)
			}
		})
	}
	for name, mod := range map[string]func(s *Signed){
		"index value in place": func(s *Signed) { s.Attestation.Index["SLOT"] = "1" },
		"index key added":      func(s *Signed) { s.Attestation.Index["RDEPEND"] = "" },
		"descriptor in place":  func(s *Signed) { s.Attestation.Descriptor[len(s.Attestation.Descriptor)-2] ^= 1 },
		"time zone":            func(s *Signed) { s.Attestation.Time = s.Attestation.Time.In(time.FixedZone("X", 3600)) },
		"attester":             func(s *Signed) { s.Attester = testPeer(t, 5) },
		"payload in place":     func(s *Signed) { s.Payload[len(s.Payload)-2] ^= 1 },
		"signature":            func(s *Signed) { s.Signature = append([]byte(nil), s.Signature...); s.Signature[0] ^= 1 },
		"public key":           func(s *Signed) { s.PublicKey = signAs(t, 2, s.Attestation).PublicKey },
	} {
		t.Run(name, func(t *testing.T) {
			s := fresh(t)
			mod(s)
			if err := s.Verify(); err == nil {
				t.Fatalf("%s changed in memory, and Verify passed", name)
			}
		})
	}
	// A Signed built in memory from verified parts is checked in full.
	s := fresh(t)
	built := &Signed{Payload: s.Payload, PublicKey: s.PublicKey, Signature: s.Signature, Attestation: s.Attestation, Attester: s.Attester}
	if err := built.Verify(); err != nil {
		t.Fatalf("a Signed built from verified parts: %v", err)
	}
	built.Attestation.Size++
	if err := built.Verify(); err == nil {
		t.Fatal("a Signed built in memory with a changed field verified")
	}
}

// changeValue changes v (a settable field) to another value of its type.
func changeValue(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Array:
		changeValue(t, v.Index(0))
	case reflect.Uint8:
		v.SetUint(v.Uint() ^ 1)
	case reflect.Slice: // the descriptor: other JSON
		v.SetBytes([]byte(`{"changed":true}`))
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range v.MapKeys() {
			m.SetMapIndex(k, v.MapIndex(k))
		}
		m.SetMapIndex(reflect.ValueOf("KEYWORDS"), reflect.ValueOf("amd64"))
		v.Set(m)
	case reflect.Struct: // time.Time, the one struct leafFields stops at
		tm := v.Addr().Interface().(*time.Time)
		*tm = tm.Add(time.Second)
	default:
		t.Fatalf("changeValue: kind %s not handled", v.Kind())
	}
}

type leafField struct {
	name  string
	index []int
}

// leafFields lists the fields of struct type typ, descending into nested
// structs other than time.Time.
func leafFields(typ reflect.Type, index []int, prefix string) []leafField {
	var out []leafField
	for i := range typ.NumField() {
		f := typ.Field(i)
		ix := append(slices.Clone(index), i)
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
			out = append(out, leafFields(f.Type, ix, prefix+f.Name+".")...)
			continue
		}
		out = append(out, leafField{prefix + f.Name, ix})
	}
	return out
}
