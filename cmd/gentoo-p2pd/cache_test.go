package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

// TestCacheCommands: `cache ls` renders each build and the totals (and
// --json the daemon's answer), `cache gc --to SIZE` sends the parsed size
// and prints what was freed; a size that does not parse never reaches the
// daemon.
func TestCacheCommands(t *testing.T) {
	now := time.Now().UTC()
	list := api.CacheList{
		Builds: []api.CachedBuild{
			{CPV: "app-misc/consumer-1.0", BuildKey: "bafkreiconsumerconsumerconsumer", Size: 3 << 20, LastUsed: now.Add(-3 * time.Hour), Verdict: "disputed"},
			{CPV: "app-misc/hello-1.0", BuildKey: "bafkreihello", Size: 2048, LastUsed: now.Add(-5 * time.Minute), Verdict: "allowed", Servable: true, OwnBuild: true},
		},
		Files: 2, Bytes: 3<<20 + 2048, ServableBytes: 2048, DiskBudget: 10 << 30,
	}
	var (
		mu   sync.Mutex
		sent []api.CacheGCRequest
	)
	sock := fakeDaemon(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case api.PathCache:
			json.NewEncoder(w).Encode(list)
		case api.PathCacheGC:
			var req api.CacheGCRequest
			json.NewDecoder(r.Body).Decode(&req)
			mu.Lock()
			sent = append(sent, req)
			mu.Unlock()
			json.NewEncoder(w).Encode(api.CacheGCResult{Target: 1 << 20, Before: 3<<20 + 2048, After: 2048, Freed: 3 << 20,
				Note: "the rest is kept: files that are also own builds in PKGDIR are never evicted"})
		default:
			api.WriteError(w, api.Errorf(api.CodeNotFound, "no such endpoint"))
		}
	})

	out, _, err := runCLI(t, "cache", "ls", "--api-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"app-misc/consumer-1.0  bafkreiconsumerconsumerconsumer  3.0 MiB",
		"3.0 MiB  used 3h ago  not served (disputed)",
		"app-misc/hello-1.0  bafkreihello  2.0 KiB  used 5m ago  served (allowed)  own build in PKGDIR",
		"2 build(s), 3.0 MiB (2.0 KiB still served); disk budget 10.0 GiB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cache ls lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, "cache", "ls", "--json", "--api-socket", sock)
	var got api.CacheList
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Files != 2 || got.Builds[1].CPV != "app-misc/hello-1.0" {
		t.Errorf("cache ls --json: %v\n%s", err, out)
	}

	out, _, err = runCLI(t, "cache", "gc", "--to", "1MiB", "--api-socket", sock)
	if err != nil {
		t.Fatal(err)
	}
	if want := "freed 3.0 MiB: the cache holds 2.0 KiB (was 3.0 MiB, target 1.0 MiB)\nnote: the rest is kept"; !strings.HasPrefix(out, want) {
		t.Errorf("cache gc printed\n%s\nwant prefix\n%s", out, want)
	}
	if _, _, err := runCLI(t, "cache", "gc", "--api-socket", sock); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "cache", "gc", "--to", "lots", "--api-socket", sock); err == nil || !strings.Contains(err.Error(), "--to") {
		t.Errorf("cache gc --to lots: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 2 || sent[0].To == nil || *sent[0].To != 1<<20 || sent[1].To != nil {
		t.Errorf("gc requests sent: %+v", sent)
	}
}
