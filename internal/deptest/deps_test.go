package deptest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/gentoo-p2p/gentoo-p2pd/"

// rule is what one package may depend on, transitively: only the packages
// of ours in mayUse, and no dependency whose path starts with an entry of
// never.
type rule struct {
	mayUse []string
	never  []string
	why    string
}

var network = []string{"github.com/libp2p/go-libp2p/p2p/", "github.com/libp2p/go-libp2p-kad-dht", "github.com/libp2p/go-libp2p-pubsub"}

// rules follow the data flow of docs/ARCHITECTURE.md: formats → identity →
// store → p2p → trust → the daemon's jobs (votes → own, materialize →
// binhost, localapi) → daemon → cmd.
var rules = map[string]rule{
	"config":             {why: "every package may read the configuration, so it reads none of them"},
	"store":              {why: "the store keeps opaque blobs: a change of the attestation format never needs a storage migration"},
	"xpak":               {never: []string{"github.com/ProtonMail/go-crypto"}, why: "xpak reads and writes containers; signing is portagehook's"},
	"pieces":             {why: "a leaf: the piece layer of a file"},
	"keys":               {never: network, why: "the vocabulary of keys"},
	"p2p/wire":           {never: network, why: "the network vocabulary the jobs share with p2p, without its host"},
	"trust":              {mayUse: []string{"keys"}, never: network, why: "trust decides and never talks to the network, so it can be reviewed on its own"},
	"internal/publicdht": {why: "the stand-in public DHT is libp2p's own DHT, nothing of ours"},
	"p2p":                {mayUse: []string{"p2p/wire"}, why: "payloads are opaque bytes: no decoding of ours can creep into the network layer"},
	"api":                {mayUse: []string{"keys", "trust"}, never: network, why: "the wire types of the local API"},
	"identity": {mayUse: []string{"keys", "xpak"}, never: append([]string{"net"}, network...),
		why: "identity computes keys and digests from files; it does no networking"},
	"fit": {mayUse: []string{"identity", "keys", "xpak"}, never: append([]string{"net"}, network...),
		why: "fit reads this machine's files and a build's content; it does no networking and decides nothing about trust"},
	"scan":        {mayUse: []string{"store"}, why: "the indexer (identity, pieces, xpak) is injected, so scan never grows those dependencies"},
	"transfer":    {mayUse: []string{"pieces"}, why: "moves verified bytes; what they mean is decided elsewhere"},
	"portagehook": {mayUse: []string{"xpak"}, never: append([]string{"github.com/spf13/viper"}, network...), why: "portage's side knows nothing of libp2p or of the network layer"},
	"votes": {mayUse: []string{"config", "identity", "keys", "p2p/wire", "portagehook", "store", "trust", "xpak"}, never: network,
		why: "votes reaches the network through its Network interface only"},
	"own": {mayUse: []string{"config", "fit", "identity", "keys", "p2p/wire", "pieces", "portagehook", "scan", "store", "trust", "votes", "xpak"}, never: network,
		why: "own builds feed votes; they never fetch"},
	"materialize": {mayUse: []string{"config", "identity", "keys", "p2p/wire", "pieces", "portagehook", "store", "transfer", "trust", "votes", "xpak"}, never: network,
		why: "materializing reads votes and moves files; it never attests"},
	"binhost": {mayUse: []string{"config", "fit", "identity", "keys", "materialize", "p2p/wire", "pieces", "portagehook", "store", "transfer", "trust", "votes", "xpak"}, never: network,
		why: "what portage sees is read from votes and materialize only"},
	"builder": {mayUse: []string{"api", "keys", "scan", "store", "trust"}, never: network,
		why: "the builder reaches demand, votes and own through its own small interfaces, and the network not at all"},
	"localapi": {mayUse: []string{"api", "config", "fit", "identity", "keys", "materialize", "own", "p2p/wire", "pieces", "portagehook", "scan", "store", "transfer", "trust", "votes", "xpak"}, never: network,
		why: "the local API reads the jobs; only the daemon wires the network"},
}

// TestDependencies checks every rule against `go list`'s transitive
// dependencies (tests excluded), and that every package has a rule or is
// one of the wiring packages that may use everything.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	wiring := []string{"daemon", "cmd/gentoo-p2pd", "internal/demo", "internal/testnet", "internal/hostile", "internal/memnet",
		"internal/fixtures", "internal/deptest", "internal/jobtest", "internal/sim", "cmd/p2psim", "integration", "packaging"}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, "|")
		name := strings.TrimPrefix(pkg, module)
		seen[name] = true
		r, ok := rules[name]
		if !ok {
			if !slices.Contains(wiring, name) {
				t.Errorf("package %s has no dependency rule: add one to rules", name)
			}
			continue
		}
		for _, d := range strings.Fields(deps) {
			if ours, found := strings.CutPrefix(d, module); found && !slices.Contains(r.mayUse, ours) {
				t.Errorf("%s depends on %s (%s)", name, ours, r.why)
			}
			for _, n := range r.never {
				if d == n || strings.HasPrefix(d, strings.TrimSuffix(n, "/")+"/") || strings.HasPrefix(d, n) && strings.HasSuffix(n, "/") {
					t.Errorf("%s depends on %s (%s)", name, d, r.why)
				}
			}
		}
	}
	for name := range rules {
		if !seen[name] {
			t.Errorf("rule for %s, which go list did not report", name)
		}
	}
}
