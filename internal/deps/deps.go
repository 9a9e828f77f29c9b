package deps

import (
	_ "github.com/ProtonMail/go-crypto/openpgp"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/ipfs/go-cid"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/libp2p/go-libp2p-kad-dht"
	_ "github.com/libp2p/go-libp2p-pubsub"
	_ "github.com/multiformats/go-multihash"
	_ "github.com/pierrec/lz4/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/spf13/cobra"
	_ "github.com/spf13/viper"
	_ "github.com/ulikunitz/xz"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/sync/errgroup"
)
