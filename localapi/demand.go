package localapi

import (
	"context"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/identity"
	"github.com/gentoo-p2p/gentoo-p2pd/portagehook"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
	"github.com/gentoo-p2p/gentoo-p2pd/xpak"
)

// demandInstalled records demand for the variant installed as cpv, read
// from its vdb entry.
func (srv *Server) demandInstalled(ctx context.Context, res *api.AnnounceResult, cpv string, kind trust.DemandKind) {
	m, err := portagehook.InstalledMetadata(srv.vdb, cpv, srv.files)
	if err != nil {
		res.Note = joinNote(res.Note, "demand not recorded: "+err.Error())
		return
	}
	srv.recordDemand(ctx, res, m, kind)
}

// recordDemand signs and gossips this daemon's demand for the variant m
// describes (votes.Book.RecordDemand), noting the outcome in res. Native
// flags are resolved as the build resolved them here.
func (srv *Server) recordDemand(ctx context.Context, res *api.AnnounceResult, m *xpak.Metadata, kind trust.DemandKind) {
	desc, err := identity.DescriptorFromMetadata(m, srv.md5cache)
	if err == nil {
		if _, flag := desc.NativeFlag(); flag != "" && srv.expand != nil {
			desc, err = desc.ResolveNative(srv.expand)
		}
	}
	if err == nil {
		_, err = srv.votes.RecordDemand(context.WithoutCancel(ctx), desc, kind)
	}
	if err != nil {
		res.Note = joinNote(res.Note, "demand not recorded: "+err.Error())
		return
	}
	res.DemandRecorded = true
	if res.VariantKey == "" {
		res.VariantKey = desc.VariantKey()
	}
	res.Note = joinNote(res.Note, "demand recorded")
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
