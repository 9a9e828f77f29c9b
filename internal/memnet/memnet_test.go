package memnet_test

import (
	"github.com/gentoo-p2p/gentoo-p2pd/internal/memnet"
	"github.com/gentoo-p2p/gentoo-p2pd/localapi"
	"github.com/gentoo-p2p/gentoo-p2pd/materialize"
	"github.com/gentoo-p2p/gentoo-p2pd/own"
	"github.com/gentoo-p2p/gentoo-p2pd/p2p"
	"github.com/gentoo-p2p/gentoo-p2pd/votes"
)

// The fake answers every interface the daemon's jobs put in front of the
// network, as *p2p.Node does.
var (
	_ votes.Network       = (*memnet.Node)(nil)
	_ own.Network         = (*memnet.Node)(nil)
	_ materialize.Network = (*memnet.Node)(nil)
	_ localapi.Network    = (*memnet.Node)(nil)

	_ votes.Network       = (*p2p.Node)(nil)
	_ own.Network         = (*p2p.Node)(nil)
	_ materialize.Network = (*p2p.Node)(nil)
	_ localapi.Network    = (*p2p.Node)(nil)
)
