package daemon

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/scan"
	"github.com/gentoo-p2p/gentoo-p2pd/store"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

// apiHandler serves the local API on the unix socket. The socket is 0600,
// so only the daemon's user reaches it.
func (d *Daemon) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.Status(r.Context()))
	})
	mux.HandleFunc("GET "+api.PathPeers, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.peers())
	})
	mux.HandleFunc("GET "+api.PathFind, func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Find(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathAnnounce, func(w http.ResponseWriter, r *http.Request) {
		var req api.AnnounceRequest
		if err := readJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		res, err := d.Announce(r.Context(), req)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathFetch, func(w http.ResponseWriter, r *http.Request) {
		var req api.FetchRequest
		if err := readJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if !req.Progress {
			res, err := d.Fetch(r.Context(), req)
			if err != nil {
				writeError(w, http.StatusUnprocessableEntity, err)
				return
			}
			writeJSON(w, res)
			return
		}
		// Progress: one JSON event per line, the result (or error) last.
		w.Header().Set("Content-Type", "application/x-ndjson")
		flusher, _ := w.(http.Flusher)
		var mu sync.Mutex
		enc := json.NewEncoder(w)
		emit := func(ev api.FetchEvent) {
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(ev)
			if flusher != nil {
				flusher.Flush()
			}
		}
		var last time.Time
		res, err := d.FetchWithProgress(r.Context(), req, func(p transfer.Progress) {
			if p.Done < p.Total && time.Since(last) < 100*time.Millisecond {
				return
			}
			last = time.Now()
			emit(api.FetchEvent{Progress: &api.FetchProgress{Done: p.Done, Total: p.Total, Peers: p.Peers}})
		})
		if err != nil {
			emit(api.FetchEvent{Error: err.Error()})
			return
		}
		emit(api.FetchEvent{Result: &res})
	})
	mux.HandleFunc("GET "+api.PathTrustExplain, func(w http.ResponseWriter, r *http.Request) {
		res, err := d.Explain(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET "+api.PathTrustPolicy, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, d.PolicyView())
	})
	mux.HandleFunc("POST "+api.PathEndorse, func(w http.ResponseWriter, r *http.Request) {
		var req api.EndorseRequest
		if err := readJSON(r, &req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		added, err := d.ingestEndorsement(r.Context(), req.Blob, d.self, true)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, err)
			return
		}
		writeJSON(w, api.EndorseResult{Stored: added})
	})
	mux.HandleFunc("GET "+api.PathGateway, func(w http.ResponseWriter, r *http.Request) {
		info, err := d.GatewayInfo()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// Status gathers the one-screen summary.
func (d *Daemon) Status(ctx context.Context) api.Status {
	st := api.Status{
		Version:    Version,
		Mode:       string(d.cfg.Mode),
		PeerID:     d.self.String(),
		StartedAt:  d.started.UTC().Truncate(time.Second),
		Platform:   d.platform,
		PKGDIR:     d.cfg.Portage.PkgDir,
		Threshold:  d.policy.Threshold,
		GatewayURL: d.GatewayURL(),
		MetricsURL: d.MetricsURL(),
		Socket:     d.cfg.API.Socket,
		CacheLimit: d.cfg.Cache.DiskBudget,
	}
	if s, _ := d.pkgdirMsg.Load().(string); s != "" {
		st.PKGDIRNote = s
	}
	if d.node != nil {
		for _, a := range d.node.Addrs() {
			st.Addrs = append(st.Addrs, a.String())
		}
		st.Peers = len(d.node.Peers())
		st.Reachability = d.node.Reachability()
		if ps, err := d.node.ProvideStats(ctx); err == nil {
			st.KeysProvided = ps.Keys
			st.ReprovideLag = ps.ReprovideLag
			if !ps.NextReprovideAt.IsZero() && ps.ReprovideInterval > 0 {
				st.LastReprovide = ps.NextReprovideAt.Add(-ps.ReprovideInterval).UTC().Truncate(time.Second)
			}
		}
	}
	if lps, err := d.store.ListLocal(); err == nil {
		st.PackagesShared = len(lps)
	}
	// Counted from the records' fields, without reading a blob: status is
	// polled, and the store may hold a flooder's full budget.
	if n, contents, err := d.store.ContentsByBuildKey(); err == nil {
		st.CatalogAttestations = n
		// Only a build key with two content ids can be disputed: evaluate
		// those, not the whole catalog.
		st.CatalogBuilds = len(contents)
		for k, cs := range contents {
			if len(cs) < 2 {
				continue
			}
			if v, _, err := d.verdict(k); err == nil && v.Decision == trust.Disputed {
				st.Disputes++
			}
		}
	}
	if ev, err := d.store.Evidence(); err == nil {
		peers := map[string]bool{}
		for _, e := range ev {
			peers[e.Peer] = true
		}
		st.Equivocations = len(peers)
	}
	st.RejectedAttestations = d.counters.rejected.Load()
	if c, err := d.store.Counters(); err == nil {
		st.BuildsFetched = int(c["builds_fetched"])
		st.BytesFetched = c["bytes_fetched"]
		st.BytesSaved = c["bytes_saved"]
	}
	st.BytesServed = int64(d.counterValue("gentoo_p2pd_transfer_served_bytes_total"))
	st.CacheBytes = d.store.Cache().Usage()
	if f := d.lastFetchFailure.Load(); f != nil {
		st.LastFetchError, st.LastFetchErrorAt = f.err, f.at.UTC().Truncate(time.Second)
	}
	return st
}

func (d *Daemon) peers() api.PeersResponse {
	out := api.PeersResponse{Peers: []api.Peer{}}
	if d.node == nil {
		return out
	}
	for _, p := range d.node.Peers() {
		ap := api.Peer{ID: p.ID.String(), Direction: p.Direction}
		for _, a := range p.Addrs {
			ap.Addrs = append(ap.Addrs, a.String())
		}
		out.Peers = append(out.Peers, ap)
	}
	return out
}

// Find looks a build up in the network: providers from the DHT and the
// attestations they hold. A CPV is resolved through the catalog.
func (d *Daemon) Find(ctx context.Context, q string) (api.FindResult, error) {
	start := time.Now()
	res := api.FindResult{Query: q, Builds: []api.FoundBuild{}}
	keys, err := d.resolveQuery(q)
	if err != nil {
		return res, err
	}
	for _, bk := range keys {
		fb := api.FoundBuild{BuildKey: bk, Providers: []string{}, Attestations: []api.AttestationInfo{}}
		files, err := d.providerFiles(ctx, bk)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		seen := map[peer.ID]bool{}
		for _, ps := range files {
			for _, p := range ps {
				if !seen[p.ID] {
					seen[p.ID] = true
					fb.Providers = append(fb.Providers, p.ID.String())
				}
			}
		}
		if lps, _ := d.store.LocalByBuildKey(bk); len(lps) > 0 {
			fb.Providers = append(fb.Providers, d.self.String()+" (self)")
		}
		recs, _ := d.store.AttestationsFor(bk)
		for _, r := range recs {
			s, err := d.decodeAttestation(r.Blob)
			if err != nil {
				continue
			}
			fb.Attestations = append(fb.Attestations, attestationInfo(s, r.From))
			fb.CPV, fb.VariantKey = s.Attestation.CPV, s.Attestation.VariantKey
		}
		if v, _, err := d.verdict(bk); err == nil {
			fb.Verdict = v.Decision.String()
		}
		res.Builds = append(res.Builds, fb)
	}
	// A build key nobody in the catalog knows can still have providers.
	if len(res.Builds) == 1 && len(res.Builds[0].Attestations) == 0 && len(res.Builds[0].Providers) == 0 {
		if _, err := cid.Decode(q); err != nil {
			res.Builds = res.Builds[:0]
		}
	}
	res.Took = time.Since(start)
	return res, nil
}

func attestationInfo(s *trust.Signed, from string) api.AttestationInfo {
	a := s.Attestation
	return api.AttestationInfo{
		Attester: s.Attester.String(), BuildKey: a.BuildKey, VariantKey: a.VariantKey,
		CPV: a.CPV, Content: a.Content.String(), FileSHA256: hex.EncodeToString(a.FileSHA256[:]),
		Size: a.Size, Format: a.Format, Time: a.Time, ReceivedVia: from,
	}
}

// Announce indexes one binpkg now (the bashrc hook's call), or records a
// binary install.
func (d *Daemon) Announce(ctx context.Context, req api.AnnounceRequest) (api.AnnounceResult, error) {
	if req.Installed != "" {
		d.store.IncCounter("installs", 1)
		return api.AnnounceResult{CPV: req.Installed, Note: "install recorded"}, nil
	}
	if req.Path == "" {
		return api.AnnounceResult{}, errors.New("announce: give the path of a binpkg in PKGDIR")
	}
	if looksLikeCPV(req.Path) {
		// The hook could not tell the file name (an unknown PKGDIR
		// layout): rescan and announce what portage wrote for the CPV.
		return d.announceCPV(ctx, req.Path)
	}
	path, err := filepath.Abs(req.Path)
	if err != nil {
		return api.AnnounceResult{}, err
	}
	pkgdir, _ := filepath.Abs(d.cfg.Portage.PkgDir)
	if rel, err := filepath.Rel(pkgdir, path); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return api.AnnounceResult{}, fmt.Errorf("announce: %s is not inside PKGDIR %s", path, pkgdir)
	}
	if _, err := os.Stat(path); err != nil {
		return api.AnnounceResult{}, fmt.Errorf("announce: %w", err)
	}
	ch, err := d.syncNow(ctx)
	if err != nil {
		return api.AnnounceResult{}, err
	}
	lp, ok, err := d.store.GetLocal(path)
	if err != nil {
		return api.AnnounceResult{}, err
	}
	if !ok {
		for _, e := range ch.Errors {
			if strings.Contains(e.Error(), path) {
				return api.AnnounceResult{}, e
			}
		}
		return api.AnnounceResult{}, fmt.Errorf("announce: %s was not indexed (not a binpkg name portage writes?)", path)
	}
	return d.announceResult(lp), nil
}

// looksLikeCPV tells "app-misc/hello-1.0" from a path: two non-empty
// parts, neither "." nor "..", and no file of that name here.
func looksLikeCPV(s string) bool {
	cat, pf, ok := strings.Cut(s, "/")
	if !ok || cat == "" || pf == "" || strings.Contains(pf, "/") || cat == "." || cat == ".." {
		return false
	}
	_, err := os.Stat(s)
	return errors.Is(err, os.ErrNotExist)
}

func (d *Daemon) announceCPV(ctx context.Context, cpv string) (api.AnnounceResult, error) {
	if _, err := d.syncNow(ctx); err != nil {
		return api.AnnounceResult{}, err
	}
	lps, err := d.store.ListLocal()
	if err != nil {
		return api.AnnounceResult{}, err
	}
	var best *store.LocalPackage
	for i := range lps {
		if lps[i].CPV == cpv && (best == nil || lps[i].IndexedAt.After(best.IndexedAt)) {
			best = &lps[i]
		}
	}
	if best == nil {
		return api.AnnounceResult{}, fmt.Errorf("announce: no binpkg of %s in PKGDIR %s", cpv, d.cfg.Portage.PkgDir)
	}
	return d.announceResult(*best), nil
}

func (d *Daemon) announceResult(lp store.LocalPackage) api.AnnounceResult {
	return api.AnnounceResult{
		Path: lp.Path, CPV: lp.CPV, BuildKey: lp.BuildKey, VariantKey: lp.VariantKey,
		Content:  trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}.String(),
		Provided: d.node.Providing(mustCID(lp.BuildKey)),
	}
}

func mustCID(s string) cid.Cid {
	c, _ := cid.Decode(s)
	return c
}

// Fetch materializes the allowed build for a query and copies it to Dir.
func (d *Daemon) Fetch(ctx context.Context, req api.FetchRequest) (api.FetchResult, error) {
	return d.FetchWithProgress(ctx, req, nil)
}

// FetchWithProgress is Fetch, reporting transfer progress to progress.
func (d *Daemon) FetchWithProgress(ctx context.Context, req api.FetchRequest, progress func(transfer.Progress)) (api.FetchResult, error) {
	keys, err := d.resolveQuery(req.Query)
	if err != nil {
		return api.FetchResult{}, err
	}
	if len(keys) == 0 {
		return api.FetchResult{}, fmt.Errorf("fetch: nothing in the catalog matches %q (try `gentoo-p2pd find %s`)", req.Query, req.Query)
	}
	var lastErr error
	for _, bk := range keys {
		m, err := d.materialize(ctx, bk, progress)
		if err != nil {
			lastErr = err
			continue
		}
		a := m.Att.Attestation
		out := api.FetchResult{
			BuildKey: bk, CPV: a.CPV, Content: a.Content.String(),
			FileSHA256: hex.EncodeToString(a.FileSHA256[:]), Size: a.Size, Path: m.Path,
			Providers: len(m.Result.PeerPieces), PiecesReused: m.Result.PiecesReused, Took: m.Result.Duration,
		}
		for _, f := range m.Result.BadPeers {
			out.BadPeers = append(out.BadPeers, fmt.Sprintf("%s: %s", f.Peer, f.Kind))
		}
		if req.Dir != "" {
			dst := filepath.Join(req.Dir, binpkgName(a.CPV, a.Format))
			if err := copyFile(m.Path, dst); err != nil {
				return out, err
			}
			out.Path = dst
		}
		return out, nil
	}
	return api.FetchResult{}, lastErr
}

// binpkgName is the file name a fetched build is saved under.
func binpkgName(cpv, format string) string {
	base := cpv[strings.LastIndex(cpv, "/")+1:]
	if format == "xpak" {
		return base + ".xpak"
	}
	return base + ".gpkg.tar"
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".fetch-*")
	if err != nil {
		return err
	}
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// Explanation answers `trust explain`: the verdict of every build key the
// query names.
type Explanation struct {
	Query    string          `json:"query"`
	Verdicts []trust.Verdict `json:"verdicts"`
	Text     string          `json:"text"`
}

// Explain computes and explains the verdicts for a query.
func (d *Daemon) Explain(ctx context.Context, q string) (Explanation, error) {
	keys, err := d.resolveQuery(q)
	if err != nil {
		return Explanation{}, err
	}
	ex := Explanation{Query: q, Verdicts: []trust.Verdict{}}
	var sb strings.Builder
	for _, bk := range keys {
		v, _, err := d.verdict(bk)
		if err != nil {
			return ex, err
		}
		ex.Verdicts = append(ex.Verdicts, v)
		sb.WriteString(v.Explain())
		sb.WriteString("\n")
	}
	if len(keys) == 0 {
		sb.WriteString("no attestations for " + q + " in the catalog\n")
	}
	ex.Text = sb.String()
	return ex, nil
}

// PolicyView is the effective trust policy, printable.
type PolicyView struct {
	Threshold        int      `json:"threshold"`
	Dispute          int      `json:"dispute"`
	RequireSigner    bool     `json:"require_signer"`
	DistinctNetworks bool     `json:"distinct_networks"`
	Signers          []string `json:"signers"`
	PGPKeys          []string `json:"pgp_keys"`
	TrustedPeers     []string `json:"trusted_peers"`
	BlockedPeers     []string `json:"blocked_peers"`
	Overrides        []string `json:"overrides"`
	Self             string   `json:"self"`
}

// PolicyView reports the policy the daemon applies.
func (d *Daemon) PolicyView() PolicyView {
	p := d.policy
	v := PolicyView{Threshold: p.Threshold, Dispute: p.Dispute, RequireSigner: p.RequireSigner,
		DistinctNetworks: p.DistinctNetworks, Self: d.self.String(),
		Signers: []string{}, PGPKeys: []string{}, TrustedPeers: []string{}, BlockedPeers: []string{}, Overrides: []string{}}
	for _, s := range p.Signers {
		v.Signers = append(v.Signers, hex.EncodeToString(s))
	}
	for _, e := range p.PGPKeyring {
		v.PGPKeys = append(v.PGPKeys, strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)))
	}
	for _, id := range p.TrustedPeers {
		v.TrustedPeers = append(v.TrustedPeers, id.String())
	}
	for _, id := range p.BlockedPeers {
		v.BlockedPeers = append(v.BlockedPeers, id.String())
	}
	for _, o := range p.Overrides {
		s := o.Glob + ":"
		if o.Threshold != nil {
			s += fmt.Sprintf(" threshold=%d", *o.Threshold)
		}
		if o.Dispute != nil {
			s += fmt.Sprintf(" dispute=%d", *o.Dispute)
		}
		if o.RequireSigner != nil {
			s += fmt.Sprintf(" require_signer=%t", *o.RequireSigner)
		}
		v.Overrides = append(v.Overrides, s)
	}
	return v
}

// syncNow rescans PKGDIR for the caller (the bashrc hook). What the scan
// recorded is attested and announced even when the caller gives up first
// (the hook waits two seconds; a large binpkg takes longer to hash):
// otherwise the file would be indexed but never shared.
func (d *Daemon) syncNow(ctx context.Context) (scan.Changes, error) {
	ch, err := d.scanner.Sync(ctx)
	if len(ch.Added)+len(ch.Replaced)+len(ch.Removed) > 0 || len(ch.Errors) > 0 {
		d.applyChanges(context.WithoutCancel(ctx), ch)
	}
	return ch, err
}
