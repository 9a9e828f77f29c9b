package store

import (
	"errors"
	"testing"
)

func TestPutVouch(t *testing.T) {
	s := openTest(t, t.TempDir())
	lim := VouchLimits{PerVoucher: 2, Total: 3}
	rec := func(voucher, vouchee string, issued, expires int64) VouchRecord {
		return VouchRecord{Voucher: voucher, Vouchee: vouchee, Issued: issued, Expires: expires, Blob: []byte(voucher + vouchee)}
	}
	put := func(r VouchRecord) (bool, error) { t.Helper(); return s.PutVouch(r, lim) }
	if ok, err := put(rec("A", "B", 100, 200)); !ok || err != nil {
		t.Fatalf("first vouch: %v %v", ok, err)
	}
	// The same pair: an older or equal record is not stored, a newer one
	// (a revocation here) replaces it.
	if ok, err := put(rec("A", "B", 100, 300)); ok || err != nil {
		t.Fatalf("same issue time: %v %v, want not added", ok, err)
	}
	if ok, err := put(rec("A", "B", 150, 150)); !ok || err != nil {
		t.Fatalf("revocation: %v %v", ok, err)
	}
	if ok, _ := put(rec("A", "B", 120, 400)); ok {
		t.Fatal("an older vouch replaced its revocation")
	}
	if ok, err := put(rec("A", "C", 100, 200)); !ok || err != nil {
		t.Fatalf("second vouchee: %v %v", ok, err)
	}
	if _, err := put(rec("A", "D", 100, 200)); !errors.Is(err, ErrVouchFull) {
		t.Fatalf("third vouchee of A: %v, want ErrVouchFull", err)
	}
	if ok, err := put(rec("A", "C", 160, 260)); !ok || err != nil {
		t.Fatalf("renewal at the per-voucher cap: %v %v", ok, err)
	}
	if ok, err := put(rec("E", "B", 100, 200)); !ok || err != nil {
		t.Fatalf("another voucher: %v %v", ok, err)
	}
	if _, err := put(rec("F", "B", 100, 200)); !errors.Is(err, ErrVouchFull) {
		t.Fatalf("past the total: %v, want ErrVouchFull", err)
	}
	if _, err := put(VouchRecord{Voucher: "A", Vouchee: "B", Issued: 2, Expires: 1, Blob: []byte("x")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("expires before issue: %v", err)
	}
	all, err := s.Vouches()
	if err != nil || len(all) != 3 {
		t.Fatalf("Vouches: %d records, %v", len(all), err)
	}
	if all[0].Voucher != "A" || all[0].Vouchee != "B" || all[0].Issued != 150 || all[0].Expires != 150 {
		t.Fatalf("A→B: %+v, want the revocation", all[0])
	}
	n, err := s.PruneVouches(155)
	if err != nil || n != 1 {
		t.Fatalf("prune: %d, %v; want the revocation issued at 150 gone", n, err)
	}
	if err := s.WeightsChanged(); err != nil {
		t.Fatal(err)
	}
}
