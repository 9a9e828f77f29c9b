package localapi

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
)

// cacheWorld is a world whose daemon a fetched consumer and libfoo from b
// (into its cache) and also holds a cached copy of its own hello build.
func cacheWorld(t *testing.T) (*world, *api.Client, *Server) {
	t.Helper()
	w := newWorld(t)
	srv := w.server(nil)
	c := serve(t, srv)
	for _, q := range []string{"app-misc/consumer-1.0", "dev-libs/libfoo-2.1"} {
		var res api.FetchResult
		if err := c.Post(t.Context(), api.PathFetch, api.FetchRequest{Query: q}, &res); err != nil {
			t.Fatalf("fetch %s: %v", q, err)
		}
	}
	if n := w.fetches.Load(); n != 2 {
		t.Fatalf("%d transfers for two builds", n)
	}
	hello := w.a.Local(t, "app-misc/hello-1.0")
	tmp := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(tmp, mustRead(t, hello.Path), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := w.a.Store.Cache().Commit(tmp, hello.FileSHA256, store.CacheMeta{CPV: hello.CPV, BuildKey: hello.BuildKey}); err != nil {
		t.Fatal(err)
	}
	return w, c, srv
}

// TestCacheList: every cached build with its verdict, whether it is still
// served and whether it is an own build; totals and the disk budget.
func TestCacheList(t *testing.T) {
	w, c, _ := cacheWorld(t)
	var res api.CacheList
	if err := c.Get(t.Context(), api.PathCache, nil, &res); err != nil {
		t.Fatal(err)
	}
	if res.Files != 3 || len(res.Builds) != 3 || res.DiskBudget != 1<<30 {
		t.Fatalf("cache list: %+v", res)
	}
	var total int64
	byCPV := map[string]api.CachedBuild{}
	for _, b := range res.Builds {
		byCPV[b.CPV] = b
		total += b.Size
		if b.Verdict != "allowed" || !b.Servable || b.LastUsed.IsZero() || b.Added.IsZero() || len(b.FileSHA256) != 64 {
			t.Errorf("cached build %+v: want allowed, servable, with times and SHA-256", b)
		}
	}
	consumer := w.b.Local(t, "app-misc/consumer-1.0")
	if b := byCPV["app-misc/consumer-1.0"]; b.BuildKey != keys.Build(consumer.BuildKey) || b.Size != consumer.Size || b.OwnBuild ||
		b.FileSHA256 != fmt.Sprintf("%x", consumer.FileSHA256) {
		t.Errorf("consumer: %+v", b)
	}
	if b := byCPV["app-misc/hello-1.0"]; !b.OwnBuild {
		t.Errorf("hello is an own build in PKGDIR: %+v", b)
	}
	if _, ok := byCPV["dev-libs/libfoo-2.1"]; !ok {
		t.Errorf("libfoo missing: %+v", res.Builds)
	}
	if res.Bytes != total || res.ServableBytes != total || total != w.a.Store.Cache().Usage() {
		t.Errorf("totals %d bytes, %d servable; sum %d, usage %d", res.Bytes, res.ServableBytes, total, w.a.Store.Cache().Usage())
	}
	// Least recently used first.
	for i := 1; i < len(res.Builds); i++ {
		if res.Builds[i].LastUsed.Before(res.Builds[i-1].LastUsed) {
			t.Errorf("not least recently used first: %+v", res.Builds)
		}
	}

	// An empty cache is an empty list, not null.
	empty := newWorld(t)
	rec := do(empty.server(nil).Handler(), "GET", api.PathCache, "")
	if got := decode[api.CacheList](t, rec); got.Builds == nil || got.Files != 0 {
		t.Errorf("empty cache: %s", rec.Body.String())
	}
}

// TestCacheGC: within the budget nothing goes; --to 0 evicts everything
// but the own build in PKGDIR and says why the rest stays; bad input is a
// typed error.
func TestCacheGC(t *testing.T) {
	w, c, srv := cacheWorld(t)
	hello := w.a.Local(t, "app-misc/hello-1.0")
	before := w.a.Store.Cache().Usage()

	var res api.CacheGCResult
	if err := c.Post(t.Context(), api.PathCacheGC, api.CacheGCRequest{}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Target != 1<<30 || res.Freed != 0 || res.Before != before || res.After != before || res.Note != "" {
		t.Errorf("gc within the budget: %+v", res)
	}

	zero := int64(0)
	if err := c.Post(t.Context(), api.PathCacheGC, api.CacheGCRequest{To: &zero}, &res); err != nil {
		t.Fatal(err)
	}
	if res.Target != 0 || res.Before != before || res.After != hello.Size || res.Freed != before-hello.Size || res.Note == "" {
		t.Errorf("gc to 0: %+v (own build %d bytes)", res, hello.Size)
	}
	if ok, _ := w.a.Store.Cache().Has(hello.FileSHA256); !ok {
		t.Error("gc evicted a file that is an own build in PKGDIR")
	}
	if consumer := w.b.Local(t, "app-misc/consumer-1.0"); func() bool { ok, _ := w.a.Store.Cache().Has(consumer.FileSHA256); return ok }() {
		t.Error("gc to 0 kept a fetched copy")
	}

	// No budget and no target: nothing to do, said so.
	w.cfg.Cache.DiskBudget = 0
	got, err := srv.CacheGC(api.CacheGCRequest{})
	if err != nil || got.Freed != 0 || got.Note == "" {
		t.Errorf("gc with no budget: %+v %v", got, err)
	}

	h := srv.Handler()
	neg := int64(-1)
	err = c.Post(t.Context(), api.PathCacheGC, api.CacheGCRequest{To: &neg}, &res)
	if !api.IsBadRequest(err) {
		t.Errorf("gc to a negative size: %v (code %q)", err, api.CodeOf(err))
	}
	wantError(t, "gc with a bad body", do(h, "POST", api.PathCacheGC, `{"to":"1GiB"}`), api.CodeBadRequest, "bad request body")
	wantError(t, "gc by GET", do(h, "GET", api.PathCacheGC, ""), api.CodeNotFound, "no such endpoint")
}
