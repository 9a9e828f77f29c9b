package api

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func fixedStatus() Status {
	start := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	return Status{
		Version: "0.1.0", Mode: "share",
		PeerID:       "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf",
		Addrs:        []string{"/ip4/127.0.0.1/tcp/4701"},
		Reachability: "private", Peers: 7, StartedAt: start,
		Discovery: "mDNS, public DHT rendezvous (advertised; 5 peers found through it)",
		Platform:  "x86_64-pc-linux-gnu-3f2a9c1b", PKGDIR: "/var/cache/binpkgs",
		PackagesShared: 12, KeysProvided: 24,
		LastReprovide:       start.Add(30 * time.Minute),
		CatalogAttestations: 311, CatalogBuilds: 97, RejectedAttestations: 2,
		BuildsFetched: 3, BytesFetched: 48 << 20, BytesServed: 1536 << 20, BytesSaved: 48 << 20, Installs: 5,
		LastFetchError:   "transfer: disk full writing piece 3 of the partial download (removed it)",
		LastFetchErrorAt: start.Add(2 * time.Hour),
		CacheBytes:       200 << 20, CacheLimit: 10 << 30,
		Disputes: 1, Equivocations: 1, RebuildDisagreements: 1, Threshold: 3, Established: 412, Earning: 37, Vouched: 2, VouchWeighted: 5,
		GatewayURL: "http://127.0.0.1:7854/gentoo-p2pd",
		GatewayNote: "nothing listed: 97 builds of this platform known, none allowed yet " +
			"(gentoo-p2pd search TERM shows the votes, trust explain CPV why)",
		Socket: "/run/user/1000/gentoo-p2pd.sock",
		Builder: &Builds{
			Rebuild: true, Queued: 4, Done: 9, Failed: 1, CPUSeconds: 5400,
			Running: []BuildJob{{CPV: "sys-libs/libxcrypt-4.4.33", USE: []string{"system"}, Kind: "rebuild", Wanters: 6,
				Variant: "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", Started: start.Add(2 * time.Hour)}},
			Note: "waiting for an idle machine: load 1.70 on 2 cores, build.when_idle 50%",
		},
	}
}

func TestStatusGolden(t *testing.T) {
	s := fixedStatus()
	var buf bytes.Buffer
	if err := s.WriteText(&buf, s.StartedAt.Add(2*time.Hour+5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "status.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("status text differs from %s:\n--- got\n%s--- want\n%s", golden, buf.Bytes(), want)
	}
}

func TestStatusJSONRoundTrip(t *testing.T) {
	s := fixedStatus()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, back) {
		t.Errorf("round trip changed the status:\n got %+v\nwant %+v", back, s)
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}
