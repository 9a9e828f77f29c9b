package localapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
)

func (srv *Server) handlePeersAdd(w http.ResponseWriter, r *http.Request) {
	var req api.PeersAddRequest
	if err := readJSON(r, &req); err != nil {
		api.WriteError(w, err)
		return
	}
	res, err := srv.PeersAdd(r.Context(), req)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	writeJSON(w, res)
}

// PeersAdd connects to a peer now (`peers add`); the node keeps it as a
// known peer, redialled after restarts. An address that does not parse,
// lacks its /p2p/ID or names this daemon is api.CodeBadRequest; a dial
// that fails is api.CodeUnavailable.
func (srv *Server) PeersAdd(ctx context.Context, req api.PeersAddRequest) (api.PeersAddResult, error) {
	s := strings.TrimSpace(req.Addr)
	if s == "" {
		return api.PeersAddResult{}, api.Errorf(api.CodeBadRequest, "peers add: give a multiaddr ending in /p2p/ID")
	}
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return api.PeersAddResult{}, api.Errorf(api.CodeBadRequest, "peers add: %q is not a multiaddr: %w", s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return api.PeersAddResult{}, api.Errorf(api.CodeBadRequest, "peers add: %s: %w (the address needs a /p2p/ID suffix)", s, err)
	}
	if ai.ID == srv.self {
		return api.PeersAddResult{}, api.Errorf(api.CodeBadRequest, "peers add: %s is this daemon", ai.ID)
	}
	if err := srv.net.Connect(ctx, *ai); err != nil {
		return api.PeersAddResult{}, api.NewError(api.CodeUnavailable, fmt.Errorf("peers add: %w", err))
	}
	res := api.PeersAddResult{ID: ai.ID.String(), Addrs: []string{}}
	for _, a := range ai.Addrs {
		res.Addrs = append(res.Addrs, a.String())
	}
	return res, nil
}
