package localapi

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

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/keys"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/transfer"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// Handler serves the local API on the unix socket. The socket is 0600,
// so only the daemon's user reaches it. A failure is answered with the
// status of its api.Code and an api.Error body.
func (srv *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, srv.Status(r.Context()))
	})
	mux.HandleFunc("GET "+api.PathPeers, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, srv.peers())
	})
	mux.HandleFunc("POST "+api.PathPeersAdd, srv.handlePeersAdd)
	mux.HandleFunc("GET "+api.PathFind, func(w http.ResponseWriter, r *http.Request) {
		res, err := srv.Find(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET "+api.PathSearch, func(w http.ResponseWriter, r *http.Request) {
		res, err := srv.Search(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathAnnounce, func(w http.ResponseWriter, r *http.Request) {
		var req api.AnnounceRequest
		if err := readJSON(r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		res, err := srv.Announce(r.Context(), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathFetch, func(w http.ResponseWriter, r *http.Request) {
		var req api.FetchRequest
		if err := readJSON(r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		if !req.Progress {
			res, err := srv.Fetch(r.Context(), req)
			if err != nil {
				api.WriteError(w, err)
				return
			}
			writeJSON(w, res)
			return
		}
		srv.fetchStream(w, r, req)
	})
	mux.HandleFunc("GET "+api.PathTrustExplain, func(w http.ResponseWriter, r *http.Request) {
		res, err := srv.Explain(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET "+api.PathTrustPolicy, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, srv.PolicyView())
	})
	mux.HandleFunc("POST "+api.PathEndorse, func(w http.ResponseWriter, r *http.Request) {
		var req api.EndorseRequest
		if err := readJSON(r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		res, err := srv.Endorse(r.Context(), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("POST "+api.PathTrustVouch, func(w http.ResponseWriter, r *http.Request) {
		var req api.VouchRequest
		if err := readJSON(r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		res, err := srv.Vouch(r.Context(), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, res)
	})
	mux.HandleFunc("GET "+api.PathGateway, func(w http.ResponseWriter, r *http.Request) {
		info, err := srv.GatewayInfo()
		if err != nil {
			api.WriteError(w, err)
			return
		}
		writeJSON(w, info)
	})
	srv.handleCache(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, api.Errorf(api.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// fetchStream answers a fetch with progress: one JSON event per line, the
// result (or error) last. Until the first line is written nothing is
// committed, so a fetch that fails before any progress (nothing matches,
// not allowed, no provider) is answered as an ordinary error, with its
// status.
func (srv *Server) fetchStream(w http.ResponseWriter, r *http.Request, req api.FetchRequest) {
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex
	started := false
	enc := json.NewEncoder(w)
	emit := func(ev api.FetchEvent) {
		mu.Lock()
		defer mu.Unlock()
		if !started {
			started = true
			w.Header().Set("Content-Type", "application/x-ndjson")
		}
		_ = enc.Encode(ev) // a client that went away stops reading; the fetch goes on
		if flusher != nil {
			flusher.Flush()
		}
	}
	var last time.Time
	res, err := srv.FetchWithProgress(r.Context(), req, func(p transfer.Progress) {
		if p.Done < p.Total && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		emit(api.FetchEvent{Progress: &api.FetchProgress{Done: p.Done, Total: p.Total, Peers: p.Peers}})
	})
	if err != nil {
		mu.Lock()
		streaming := started
		mu.Unlock()
		if !streaming {
			api.WriteError(w, err)
			return
		}
		emit(api.FetchEvent{Error: err.Error(), Code: api.CodeOf(err)})
		return
	}
	emit(api.FetchEvent{Result: &res})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a client that went away gets nothing; nothing to undo
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.CodeBadRequest, "bad request body: %w", err)
	}
	return nil
}

// Status gathers the one-screen summary.
func (srv *Server) Status(ctx context.Context) api.Status {
	st := api.Status{
		Version:     srv.version,
		Mode:        string(srv.cfg.Mode),
		PeerID:      srv.self.String(),
		StartedAt:   srv.started.UTC().Truncate(time.Second),
		Platform:    srv.platform,
		PKGDIR:      srv.cfg.Portage.PkgDir,
		Threshold:   srv.votes.Policy().Threshold,
		Vouched:     len(srv.votes.Policy().VouchedPeers),
		FreshWeight: trust.Weight(srv.votes.Policy().FreshWeight).Percent(),
		GatewayURL:  srv.urls[0](),
		MetricsURL:  srv.urls[1](),
		Socket:      srv.cfg.API.Socket,
		CacheLimit:  srv.cfg.Cache.DiskBudget,
	}
	st.PKGDIRNote = srv.own.Note()
	st.Established, st.Earning = srv.votes.StandingCounts()
	if ws, err := srv.votes.VouchedWeights(); err == nil {
		st.VouchWeighted = len(ws)
	}
	for _, a := range srv.net.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	st.Peers = len(srv.net.Peers())
	st.Reachability = srv.net.Reachability()
	if srv.discovery != nil {
		st.Discovery = srv.discovery()
	}
	if srv.builder != nil {
		st.Builder = srv.builder()
	}
	if srv.listing != nil && st.GatewayURL != "" {
		st.GatewayListed, st.GatewayNote = srv.listing(ctx)
	}
	if ps, err := srv.net.ProvideStats(ctx); err == nil {
		st.KeysProvided = ps.Keys
		st.ReprovideLag = ps.ReprovideLag
		if !ps.NextReprovideAt.IsZero() && ps.ReprovideInterval > 0 {
			st.LastReprovide = ps.NextReprovideAt.Add(-ps.ReprovideInterval).UTC().Truncate(time.Second)
		}
	}
	// Counted, not listed: status is polled, and PKGDIR may hold
	// thousands of builds.
	if n, err := srv.store.CountLocal(); err == nil {
		st.PackagesShared = n
	}
	// Counted from the records' fields, without reading a blob: status is
	// polled, and the store may hold a flooder's full budget.
	if n, contents, err := srv.store.ContentsByBuildKey(); err == nil {
		st.CatalogAttestations = n
		// Only a build key with two content ids can be disputed: evaluate
		// those, not the whole catalog.
		st.CatalogBuilds = len(contents)
		for k, cs := range contents {
			if len(cs) < 2 {
				continue
			}
			if v, _, err := srv.votes.Verdict(keys.Build(k)); err == nil && v.Decision == trust.Disputed {
				st.Disputes++
			}
		}
	}
	if ev, err := srv.store.Evidence(); err == nil {
		peers := map[string]bool{}
		for _, e := range ev {
			peers[e.Peer] = true
		}
		st.Equivocations = len(peers)
	}
	st.RejectedAttestations = srv.votes.Rejected()
	if c, err := srv.store.Counters(); err == nil {
		st.BuildsFetched = int(c["builds_fetched"])
		st.BytesFetched = c["bytes_fetched"]
		st.BytesSaved = c["bytes_saved"]
		st.Installs = c["installs"]
	}
	if n, err := srv.store.DemandRecords(); err == nil {
		st.Demands = n
	}
	st.BytesServed = int64(counterValue(srv.reg, "gentoo_p2pd_transfer_served_bytes_total"))
	st.CacheBytes = srv.store.Cache().Usage()
	if msg, at := srv.mz.LastFailure(); msg != "" {
		st.LastFetchError, st.LastFetchErrorAt = msg, at.UTC().Truncate(time.Second)
	}
	if n, err := srv.store.CountReports(); err == nil {
		st.RebuildDisagreements = n
	}
	return st
}

func (srv *Server) peers() api.PeersResponse {
	out := api.PeersResponse{Peers: []api.Peer{}}
	for _, p := range srv.net.Peers() {
		ap := api.Peer{ID: p.ID.String(), Direction: p.Direction}
		for _, a := range p.Addrs {
			ap.Addrs = append(ap.Addrs, a.String())
		}
		out.Peers = append(out.Peers, ap)
	}
	return out
}

// resolve turns a query into build keys (votes.Book.Resolve), with its
// failures typed.
func (srv *Server) resolve(q string) ([]keys.Build, error) {
	if strings.TrimSpace(q) == "" {
		return nil, classify(ErrEmptyQuery, api.CodeBadRequest)
	}
	bks, err := srv.votes.Resolve(q)
	return bks, classify(err, api.CodeInternal)
}

// Find looks a build up in the network: providers from the DHT and the
// attestations they hold. A CPV is resolved through the catalog. Finding
// nothing is an answer (no builds), not an error; when no build of this
// machine's platform was found, Why says what the connected peers hold.
func (srv *Server) Find(ctx context.Context, q string) (api.FindResult, error) {
	start := time.Now()
	res := api.FindResult{Query: q, Builds: []api.FoundBuild{}}
	local := false // a build of this machine's platform was found
	bks, err := srv.resolve(q)
	if err != nil {
		return res, err
	}
	for _, bk := range bks {
		fb := api.FoundBuild{BuildKey: bk, Providers: []string{}, Attestations: []api.AttestationInfo{}}
		files, err := srv.mz.Providers(ctx, bk)
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
		if lps, _ := srv.store.LocalByBuildKey(string(bk)); len(lps) > 0 {
			fb.Providers = append(fb.Providers, srv.self.String()+" (self)")
		}
		recs, _ := srv.store.AttestationsFor(string(bk))
		for _, r := range recs {
			local = local || r.Platform == srv.platform
			s, err := srv.votes.Decode(r.Blob)
			if err != nil {
				continue
			}
			fb.Attestations = append(fb.Attestations, attestationInfo(s, r.From))
			fb.CPV, fb.VariantKey = s.Attestation.CPV, s.Attestation.VariantKey
		}
		if fb.VariantKey != "" {
			fb.Wanted = srv.votes.WantCount(fb.VariantKey)
		}
		if v, _, err := srv.votes.Verdict(bk); err == nil {
			fb.Verdict = v.Decision.String()
		}
		res.Builds = append(res.Builds, fb)
	}
	// A build key nobody in the catalog knows can still have providers.
	if len(res.Builds) == 1 && len(res.Builds[0].Attestations) == 0 && len(res.Builds[0].Providers) == 0 {
		if _, err := keys.ParseBuild(q); err != nil {
			res.Builds = res.Builds[:0]
		}
	}
	if !local {
		cpv := q
		if _, err := keys.ParseBuild(q); err == nil {
			cpv = "" // a build key names one platform's build: ask only what peers are
		}
		res.Why = srv.nothingFound(ctx, cpv)
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
// binary install. Either records this daemon's demand for the variant
// (a build from source, or a binary install): its descriptor comes from
// the binpkg, or from the vdb entry when there is no binpkg (a source
// build without FEATURES=buildpkg, a binary install). Demand is best
// effort: when it cannot be recorded, Note says why and the announce
// stands. A path that does not exist is api.CodeNotFound; the other
// refusals of own.Builds.Announce (outside PKGDIR, no binpkg of a CPV
// that is not installed either, a file that does not index) are
// api.CodeRejected.
func (srv *Server) Announce(ctx context.Context, req api.AnnounceRequest) (api.AnnounceResult, error) {
	if req.Installed != "" {
		if err := srv.store.IncCounter("installs", 1); err != nil {
			return api.AnnounceResult{}, classify(err, api.CodeInternal)
		}
		res := api.AnnounceResult{CPV: req.Installed, Note: "install recorded"}
		srv.demandInstalled(ctx, &res, req.Installed, trust.DemandBinary)
		return res, nil
	}
	if req.Path == "" {
		return api.AnnounceResult{}, api.Errorf(api.CodeBadRequest, "announce: give the path of a binpkg in PKGDIR, a category/package-version, or installed")
	}
	// A CPV the vdb has (the hook's call after a source build): its
	// demand is recorded from the vdb first, before PKGDIR is rescanned
	// for a binpkg, which can outlast the hook's timeout.
	var fromVDB *api.AnnounceResult
	if m, err := portagehook.InstalledMetadata(srv.vdb, req.Path, srv.files); err == nil {
		fromVDB = &api.AnnounceResult{CPV: req.Path}
		srv.recordDemand(ctx, fromVDB, m, trust.DemandSource)
	}
	lp, err := srv.own.Announce(ctx, req.Path)
	if errors.Is(err, own.ErrNoBinpkg) && fromVDB != nil {
		// A source build portage made no binpkg of (no buildpkg):
		// nothing to share, but the variant is wanted here.
		res := *fromVDB
		res.Note = joinNote("no binpkg in PKGDIR to share", res.Note)
		return res, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return api.AnnounceResult{}, api.NewError(api.CodeNotFound, err)
	}
	if err != nil {
		return api.AnnounceResult{}, classify(err, api.CodeRejected)
	}
	res := api.AnnounceResult{
		Path: lp.Path, CPV: lp.CPV, BuildKey: keys.Build(lp.BuildKey), VariantKey: keys.Variant(lp.VariantKey),
		Content:  trust.ContentID{Image: lp.ImageDigest, Metadata: lp.MetadataDigest}.String(),
		Provided: srv.own.Providing(lp),
	}
	if fromVDB != nil {
		res.DemandRecorded, res.Note = fromVDB.DemandRecorded, fromVDB.Note
	} else if pkg, err := xpak.ReadFile(lp.Path, srv.files); err != nil {
		res.Note = "demand not recorded: " + err.Error()
	} else {
		srv.recordDemand(ctx, &res, pkg.Metadata, trust.DemandSource)
	}
	return res, nil
}

// Fetch materializes the allowed build for a query and copies it to Dir.
func (srv *Server) Fetch(ctx context.Context, req api.FetchRequest) (api.FetchResult, error) {
	return srv.FetchWithProgress(ctx, req, nil)
}

// FetchWithProgress is Fetch, reporting transfer progress to progress.
// Its failures are *api.Error: nothing matches (api.CodeNotFound), the
// policy does not allow the build (api.CodeNotAllowed, wrapping
// materialize.ErrNotAllowed), no peer delivered a verified copy
// (api.CodeUnavailable), a Dir that is not an existing absolute
// directory (api.CodeBadRequest).
func (srv *Server) FetchWithProgress(ctx context.Context, req api.FetchRequest, progress func(transfer.Progress)) (api.FetchResult, error) {
	if req.Dir != "" {
		// Checked before anything is downloaded for it.
		if !filepath.IsAbs(req.Dir) {
			return api.FetchResult{}, api.Errorf(api.CodeBadRequest, "fetch: dir %q is not an absolute path", req.Dir)
		}
		if fi, err := os.Stat(req.Dir); err != nil {
			return api.FetchResult{}, api.NewError(api.CodeBadRequest, fmt.Errorf("fetch: %w", err))
		} else if !fi.IsDir() {
			return api.FetchResult{}, api.Errorf(api.CodeBadRequest, "fetch: %s is not a directory", req.Dir)
		}
	}
	bks, err := srv.resolve(req.Query)
	if err != nil {
		return api.FetchResult{}, err
	}
	if len(bks) == 0 {
		return api.FetchResult{}, classify(fmt.Errorf("fetch: %w %q (try `gentoo-p2pd find %s`)", ErrNoMatch, req.Query, req.Query), api.CodeNotFound)
	}
	var lastErr error
	for _, bk := range bks {
		m, err := srv.mz.Materialize(ctx, bk, progress)
		if err != nil {
			// Allowed but not delivered: no provider reachable, every
			// provider failed or sent bad data.
			lastErr = classify(err, api.CodeUnavailable)
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
				code := api.CodeInternal
				if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
					code = api.CodeBadRequest // the caller's Dir
				}
				return out, api.NewError(code, fmt.Errorf("fetch: copy to %s: %w", req.Dir, err))
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
	// On failure the temporary file goes; its Close and Remove errors join
	// the first one.
	fail := func(err error) error {
		return errors.Join(err, tmp.Close(), os.Remove(tmp.Name()))
	}
	if _, err := io.Copy(tmp, in); err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fail(err)
	}
	// On disk before it takes the name: a crash leaves the old file or the
	// whole new one.
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	return os.Rename(tmp.Name(), dst)
}

// Explain computes and explains the verdicts for a query. A CPV nothing
// in the catalog matches is api.CodeNotFound; a build key is always
// explained, with no votes if need be.
func (srv *Server) Explain(ctx context.Context, q string) (api.Explanation, error) {
	bks, err := srv.resolve(q)
	if err != nil {
		return api.Explanation{}, err
	}
	if len(bks) == 0 {
		return api.Explanation{}, classify(fmt.Errorf("trust explain: %w %q: no attestations for it", ErrNoMatch, q), api.CodeNotFound)
	}
	ex := api.Explanation{Query: q, Verdicts: []trust.Verdict{}}
	var sb strings.Builder
	for _, bk := range bks {
		v, _, err := srv.votes.Verdict(bk)
		if err != nil {
			return ex, classify(err, api.CodeInternal)
		}
		ex.Verdicts = append(ex.Verdicts, v)
		sb.WriteString(v.Explain())
		ds, err := srv.mz.Disagreements(bk)
		if err != nil {
			return ex, classify(err, api.CodeInternal)
		}
		for _, d := range ds {
			ex.Disagreements = append(ex.Disagreements, d)
			sb.WriteString(d.Explain())
		}
		if srv.notListed != nil {
			if why, ok := srv.notListed(bk); ok {
				if ex.NotListed == nil {
					ex.NotListed = map[keys.Build]string{}
				}
				ex.NotListed[bk] = why
				fmt.Fprintf(&sb, "The gateway does not list it: %s\n", why)
			}
		}
		sb.WriteString("\n")
	}
	ex.Text = sb.String()
	return ex, nil
}

// Endorse keeps (and publishes) an endorsement made with the user's signer
// key (`gentoo-p2pd signer endorse`). One that does not decode or verify is
// api.CodeBadRequest; one the book will not keep is api.CodeRejected.
func (srv *Server) Endorse(ctx context.Context, req api.EndorseRequest) (api.EndorseResult, error) {
	e, err := votes.DecodeEndorsement(req.Blob)
	if err == nil {
		_, err = e.BuildKey.CID()
	}
	if err != nil {
		return api.EndorseResult{}, api.NewError(api.CodeBadRequest, fmt.Errorf("endorse: %w", err))
	}
	added, err := srv.votes.IngestEndorsement(ctx, req.Blob, srv.self, true)
	if err != nil {
		return api.EndorseResult{}, classify(err, api.CodeRejected)
	}
	return api.EndorseResult{Stored: added}, nil
}

// DefaultVouchLifetime is how long `trust vouch` vouches without
// --expires: the longest a vouch may last.
const DefaultVouchLifetime = trust.MaxVouchLifetime

// Vouch signs and gossips this node's vouch for req.Peer, or its
// revocation with req.Undo.
func (srv *Server) Vouch(ctx context.Context, req api.VouchRequest) (api.VouchView, error) {
	if len(req.PGPVouch) > 0 {
		if req.Peer != "" || req.Undo || req.Expires != "" {
			return api.VouchView{}, api.Errorf(api.CodeBadRequest, "trust vouch: an OpenPGP vouch names its peer and expiry itself")
		}
		p, err := srv.votes.ImportPGPVouch(ctx, req.PGPVouch)
		if err != nil {
			return api.VouchView{}, classify(err, api.CodeRejected)
		}
		return vouchView(votes.VouchInfo{Voucher: p.Voucher, Vouchee: p.Vouch.Vouchee, Issued: p.Vouch.Issued, Expires: p.Vouch.Expires,
			Active: !p.Vouch.Revocation()}), nil
	}
	id, err := peer.Decode(req.Peer)
	if err != nil {
		return api.VouchView{}, api.Errorf(api.CodeBadRequest, "trust vouch: %q is not a peer ID: %v", req.Peer, err)
	}
	ttl := DefaultVouchLifetime
	switch {
	case req.Undo && req.Expires != "":
		return api.VouchView{}, api.Errorf(api.CodeBadRequest, "trust vouch: --undo revokes now; it takes no --expires")
	case req.Undo:
		ttl = 0
	case req.Expires != "":
		if ttl, err = time.ParseDuration(req.Expires); err != nil || ttl <= 0 || ttl > trust.MaxVouchLifetime {
			return api.VouchView{}, api.Errorf(api.CodeBadRequest, "trust vouch: expires %q: want a duration over 0 and at most %s", req.Expires, trust.MaxVouchLifetime)
		}
	}
	s, err := srv.votes.Vouch(ctx, id, ttl)
	if err != nil {
		return api.VouchView{}, classify(err, api.CodeBadRequest)
	}
	return vouchView(votes.VouchInfo{Voucher: s.Voucher, Vouchee: s.Vouch.Vouchee, Issued: s.Vouch.Issued, Expires: s.Vouch.Expires,
		Active: !s.Vouch.Revocation()}), nil
}

func vouchView(vi votes.VouchInfo) api.VouchView {
	voucher := vi.Voucher.String()
	if strings.HasPrefix(string(vi.Voucher), trust.PGPVoucherPrefix) {
		voucher = string(vi.Voucher) // "openpgp:" and the key's fingerprint
	}
	return api.VouchView{Voucher: voucher, Vouchee: vi.Vouchee.String(), Issued: vi.Issued, Expires: vi.Expires, Active: vi.Active}
}

// PolicyView reports the policy the daemon applies.
func (srv *Server) PolicyView() api.PolicyView {
	p := srv.votes.Policy()
	v := api.PolicyView{Threshold: p.Threshold, Dispute: p.Dispute, RequireSigner: p.RequireSigner,
		DistinctNetworks: p.DistinctNetworks, Self: srv.self.String(),
		Signers: []string{}, PGPKeys: []string{}, TrustedPeers: []string{}, BlockedPeers: []string{}, VouchedPeers: []string{}, Overrides: []string{},
		FreshWeight: trust.Weight(p.FreshWeight).Percent(), StandingDays: srv.votes.StandingDays(),
		VouchDecay: p.VouchDecay, VouchHops: p.VouchHops, Vouches: []api.VouchView{}}
	if vs, err := srv.votes.Vouches(srv.self); err == nil {
		for _, vi := range vs {
			v.Vouches = append(v.Vouches, vouchView(vi))
		}
	}
	for _, id := range p.VouchedPeers {
		v.VouchedPeers = append(v.VouchedPeers, id.String())
	}
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

// GatewayInfo describes the gateway for setup-portage.
func (srv *Server) GatewayInfo() (api.GatewayInfo, error) {
	if srv.gateway == nil {
		return api.GatewayInfo{}, classify(ErrGatewayDisabled, api.CodeUnavailable)
	}
	info, err := srv.gateway()
	return info, classify(err, api.CodeInternal)
}

// counterValue sums a counter's series in the daemon's registry.
func counterValue(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
