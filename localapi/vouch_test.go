package localapi

import (
	"fmt"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// TestVouchEndpoint: POST trust/vouch signs a vouch, --undo revokes it,
// trust policy lists it; bad requests name what is wrong.
func TestVouchEndpoint(t *testing.T) {
	w := newWorld(t)
	h := w.server(gatewayOn).Handler()
	target := w.b.ID.String()
	v := decode[api.VouchView](t, do(h, "POST", api.PathTrustVouch, fmt.Sprintf(`{"peer":%q,"expires":"720h"}`, target)))
	if !v.Active || v.Vouchee != target || v.Voucher != w.a.ID.String() || v.Expires.Sub(v.Issued).Hours() != 720 {
		t.Fatalf("vouch: %+v", v)
	}
	p := decode[api.PolicyView](t, do(h, "GET", api.PathTrustPolicy, ""))
	if len(p.Vouches) != 1 || p.Vouches[0].Vouchee != target || !p.Vouches[0].Active {
		t.Fatalf("policy lists %+v, want the vouch", p.Vouches)
	}
	if v := decode[api.VouchView](t, do(h, "POST", api.PathTrustVouch, fmt.Sprintf(`{"peer":%q,"undo":true}`, target))); v.Active || !v.Expires.Equal(v.Issued) {
		t.Fatalf("revocation: %+v", v)
	}
	if p := decode[api.PolicyView](t, do(h, "GET", api.PathTrustPolicy, "")); len(p.Vouches) != 1 || p.Vouches[0].Active {
		t.Fatalf("after --undo the policy lists %+v", p.Vouches)
	}
	for _, tc := range []struct{ body, msg string }{
		{`{"peer":"nope"}`, "not a peer ID"},
		{fmt.Sprintf(`{"peer":%q,"undo":true,"expires":"1h"}`, target), "takes no --expires"},
		{fmt.Sprintf(`{"peer":%q,"expires":"9000h"}`, target), "at most"},
		{fmt.Sprintf(`{"peer":%q}`, w.a.ID), "itself"},
	} {
		wantError(t, tc.body, do(h, "POST", api.PathTrustVouch, tc.body), api.CodeBadRequest, tc.msg)
	}
	// An OpenPGP vouch that does not check out is rejected, as a bad
	// endorsement is.
	wantError(t, "empty OpenPGP vouch", do(h, "POST", api.PathTrustVouch, `{"pgp_vouch":"e30="}`), api.CodeRejected, "OpenPGP vouch needs payload and signature")
}
