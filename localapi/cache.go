package localapi

import (
	"encoding/hex"
	"net/http"
	"sort"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// handleCache registers the cache endpoints: GET api.PathCache lists the
// cached builds, POST api.PathCacheGC runs the cache GC now.
func (srv *Server) handleCache(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathCache, func(w http.ResponseWriter, r *http.Request) {
		res, err := srv.CacheList()
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathCacheGC, func(w http.ResponseWriter, r *http.Request) {
		var req api.CacheGCRequest
		if err := readJSON(r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		res, err := srv.CacheGC(req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
}

// CacheList lists every cached (fetched) build, least recently used first
// (the order GC evicts in), with its verdict now and whether it may still
// be served.
func (srv *Server) CacheList() (api.CacheList, error) {
	entries, err := srv.store.Cache().List()
	if err != nil {
		return api.CacheList{}, api.Errorf(api.CodeInternal, "list cache: %w", err)
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].LastAccess.Before(entries[j].LastAccess) })
	res := api.CacheList{Builds: []api.CachedBuild{}, DiskBudget: srv.diskBudget()}
	for _, e := range entries {
		bk := keys.Build(e.Meta.BuildKey)
		b := api.CachedBuild{
			CPV: e.Meta.CPV, BuildKey: bk, FileSHA256: hex.EncodeToString(e.SHA256[:]),
			Size: e.Size, Added: e.Added.UTC(), LastUsed: e.LastAccess.UTC(),
		}
		if v, _, err := srv.votes.Verdict(bk); err == nil {
			b.Verdict = v.Decision.String()
		}
		if srv.mz != nil {
			b.Servable = srv.mz.Servable(bk)
		}
		if lps, err := srv.store.LocalBySHA(e.SHA256); err == nil && len(lps) > 0 {
			b.OwnBuild = true
		}
		res.Builds = append(res.Builds, b)
		res.Files++
		res.Bytes += e.Size
		if b.Servable {
			res.ServableBytes += e.Size
		}
	}
	return res, nil
}

// CacheGC runs the cache GC now, down to req.To or else the disk budget,
// never evicting a file that is also an own build in PKGDIR.
func (srv *Server) CacheGC(req api.CacheGCRequest) (api.CacheGCResult, error) {
	if srv.mz == nil {
		return api.CacheGCResult{}, api.Errorf(api.CodeUnavailable, "the daemon has no materializer to run the cache GC")
	}
	res := api.CacheGCResult{Before: srv.store.Cache().Usage()}
	switch {
	case req.To != nil && *req.To < 0:
		return api.CacheGCResult{}, api.Errorf(api.CodeBadRequest, "cache gc: target size %d is negative", *req.To)
	case req.To != nil:
		res.Target = *req.To
	case srv.diskBudget() <= 0:
		res.Target, res.After = 0, res.Before
		res.Note = "cache.disk_budget is 0 (unbounded): nothing to collect; give a size to shrink to"
		return res, nil
	default:
		res.Target = srv.diskBudget()
	}
	freed, err := srv.mz.CollectGarbage(res.Target)
	if err != nil {
		return api.CacheGCResult{}, api.Errorf(api.CodeInternal, "cache gc: %w", err)
	}
	res.Freed = freed
	res.After = srv.store.Cache().Usage()
	if res.After > res.Target {
		res.Note = "the rest is kept: files that are also own builds in PKGDIR are never evicted"
	}
	return res, nil
}

// diskBudget is the configured cache.disk_budget (0: unbounded), the
// budget the daemon's GC loop holds.
func (srv *Server) diskBudget() int64 { return srv.cfg.Cache.DiskBudget }
