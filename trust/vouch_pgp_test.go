package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/libp2p/go-libp2p/core/peer"
)

func pgpKey(t testing.TB, name string) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", name+"@gentoo.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A Gentoo developer's key vouches the way gpg --detach-sign does: the
// statement, its armored signature, the envelope the daemon checks.
func TestPGPVouch(t *testing.T) {
	dev, other := pgpKey(t, "dev"), pgpKey(t, "other")
	v := Vouch{Vouchee: testPeer(t, 2), Issued: vouchT0, Expires: vouchT0.Add(90 * 24 * time.Hour)}
	stmt, err := VouchStatement(v)
	if err != nil {
		t.Fatal(err)
	}
	var armored bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&armored, dev, bytes.NewReader(stmt), nil); err != nil {
		t.Fatal(err)
	}
	blob, err := PGPVouchFromStatement(stmt, armored.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	p, err := DecodePGPVouch(blob, openpgp.EntityList{other, dev})
	if err != nil {
		t.Fatal(err)
	}
	if p.Voucher != PGPVoucher(dev) || p.Vouch.Vouchee != testPeer(t, 2) || !strings.HasPrefix(VoucherName(p.Voucher), "OpenPGP key ") {
		t.Fatalf("voucher %q (%s), vouchee %s", p.Voucher, VoucherName(p.Voucher), p.Vouch.Vouchee)
	}
	if id, err := ParseVoucher(string(p.Voucher)); err != nil || id != p.Voucher {
		t.Fatalf("ParseVoucher(%q) = %q, %v", p.Voucher, id, err)
	}
	if _, err := DecodePGPVouch(blob, openpgp.EntityList{other}); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("signed by a key outside the keyring: %v, want ErrUntrustedKey", err)
	}
	if _, err := DecodePGPVouch(blob, nil); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("no keyring: %v, want ErrUntrustedKey", err)
	}
	// Relabelled: another vouchee under the same signature.
	var env map[string][]byte
	if err := json.Unmarshal(blob, &env); err != nil {
		t.Fatal(err)
	}
	relabelled, err := SignPGPVouch(Vouch{Vouchee: testPeer(t, 3), Issued: vouchT0, Expires: vouchT0.Add(time.Hour)}, dev)
	if err != nil {
		t.Fatal(err)
	}
	var renv map[string][]byte
	if err := json.Unmarshal(relabelled, &renv); err != nil {
		t.Fatal(err)
	}
	renv["signature"] = env["signature"]
	forged, _ := json.Marshal(renv)
	if _, err := DecodePGPVouch(forged, openpgp.EntityList{dev}); !errors.Is(err, ErrBadPGPSignature) {
		t.Fatalf("relabelled vouchee: %v, want ErrBadPGPSignature", err)
	}
	// A signature over the bare payload (no domain) is not a vouch.
	var bare bytes.Buffer
	if err := openpgp.DetachSign(&bare, dev, bytes.NewReader(env["payload"]), nil); err != nil {
		t.Fatal(err)
	}
	env["signature"] = bare.Bytes()
	nodomain, _ := json.Marshal(env)
	if _, err := DecodePGPVouch(nodomain, openpgp.EntityList{dev}); !errors.Is(err, ErrBadPGPSignature) {
		t.Fatalf("signature without the domain: %v, want ErrBadPGPSignature", err)
	}
	if _, err := PGPVouchFromStatement([]byte(`{"version":1}`), armored.Bytes()); !errors.Is(err, ErrMalformed) {
		t.Fatalf("statement without the domain: %v", err)
	}
	// An armored block that is no signature does not verify.
	var key bytes.Buffer
	w, err := armor.Encode(&key, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Serialize(w); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	notSig, err := PGPVouchFromStatement(stmt, key.Bytes())
	if err == nil {
		_, err = DecodePGPVouch(notSig, openpgp.EntityList{dev})
	}
	if err == nil {
		t.Fatal("a public key block taken for a signature")
	}
}

// An OpenPGP key in the keyring is a root of the vouch graph like any
// other: its vouchee weighs one hop.
func TestPGPVoucherIsARoot(t *testing.T) {
	dev := pgpKey(t, "dev")
	g := VouchGraph{Roots: []peer.ID{PGPVoucher(dev)}, Edges: []VouchEdge{{PGPVoucher(dev), testPeer(t, 2)}, {testPeer(t, 2), testPeer(t, 3)}}, Decay: 50, Hops: 2}
	w := g.Weights()
	if w[testPeer(t, 2)].Weight != 500 || w[testPeer(t, 3)].Weight != 250 {
		t.Fatalf("weights %v", w)
	}
	if from := w[testPeer(t, 2)].From(); !strings.Contains(from, "vouched for by OpenPGP key ") {
		t.Fatalf("From: %q", from)
	}
}
