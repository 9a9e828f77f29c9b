package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// TestTrustVouchCLI: trust vouch sends what the flags say, and the
// OpenPGP round trip — statement, gpg-style detached signature, import —
// hands the daemon a vouch that verifies against the signer's keyring.
func TestTrustVouchCLI(t *testing.T) {
	var mu sync.Mutex
	var got api.VouchRequest
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got = api.VouchRequest{}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			api.WriteError(w, api.Errorf(api.CodeBadRequest, "%v", err))
			return
		}
		now := time.Now().UTC().Truncate(time.Second)
		_ = json.NewEncoder(w).Encode(api.VouchView{Vouchee: got.Peer, Issued: now, Expires: now.Add(time.Hour), Active: !got.Undo})
	})
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	request := func(args ...string) api.VouchRequest {
		t.Helper()
		if _, _, err := runCLI(t, append(append([]string{"trust", "vouch"}, args...), "--api-socket", sock)...); err != nil {
			t.Fatalf("trust vouch %v: %v", args, err)
		}
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	if req := request(id.String(), "--expires", "90d"); req.Peer != id.String() || req.Expires != (90*24*time.Hour).String() || req.Undo {
		t.Fatalf("--expires 90d sent %+v", req)
	}
	if req := request("--undo", id.String()); !req.Undo || req.Expires != "" {
		t.Fatalf("--undo sent %+v", req)
	}
	for _, bad := range [][]string{{id.String(), "--expires", "3x"}, {}, {"--pgp-import", "x", id.String()}} {
		if _, _, err := runCLI(t, append(append([]string{"trust", "vouch"}, bad...), "--api-socket", sock)...); err == nil {
			t.Errorf("trust vouch %v: no error", bad)
		}
	}

	stmt, _, err := runCLI(t, "trust", "vouch", id.String(), "--pgp-statement", "--expires", "30d")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "vouch.stmt")
	if err := os.WriteFile(file, []byte(stmt), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := openpgp.NewEntity("dev", "", "dev@gentoo.example", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, dev, strings.NewReader(stmt), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file+".asc", sig.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	req := request("--pgp-import", file)
	p, err := trust.DecodePGPVouch(req.PGPVouch, openpgp.EntityList{dev})
	if err != nil {
		t.Fatalf("the imported vouch does not verify: %v", err)
	}
	if p.Vouch.Vouchee != id || p.Vouch.Expires.Sub(p.Vouch.Issued) != 30*24*time.Hour || p.Voucher != trust.PGPVoucher(dev) {
		t.Fatalf("imported %+v by %s", p.Vouch, p.Voucher)
	}
}
