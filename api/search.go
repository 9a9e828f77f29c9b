package api

import (
	"time"

	"github.com/gentoo-p2p/gentoo-p2pd/keys"
)

// PathSearch answers `search TERM`.
const PathSearch = "/api/v0/search"

// SearchResult answers `search TERM`: the builds of this machine's
// platform whose category/package-version contains TERM, like eix, with
// how many peers built each and how many hold a copy they fetched.
type SearchResult struct {
	Query    string        `json:"query"`
	Platform string        `json:"platform"`
	Builds   []SearchBuild `json:"builds"`
	// More counts the matching builds left out past the first
	// SearchLimit.
	More   int      `json:"more,omitempty"`
	Errors []string `json:"errors,omitempty"`
	// Why is set when nothing matched: what the peers asked hold instead.
	Why *NothingFound `json:"why,omitempty"`
	// Wanted are the variants matching the term that peers want (demand
	// records) and no listed build is of: what builders could build.
	Wanted []WantedVariant `json:"wanted,omitempty"`
}

// WantedVariant is one variant of this platform that peers want.
type WantedVariant struct {
	CPV        string       `json:"cpv"`
	VariantKey keys.Variant `json:"variant_key"`
	USE        []string     `json:"use"`
	// Wanters counts the distinct peers that want it (demand signed
	// within the last 30 days).
	Wanters  int       `json:"wanters"`
	LastSeen time.Time `json:"last_seen"`
}

// SearchLimit bounds the builds one search lists (each costs a DHT lookup).
const SearchLimit = 50

// SearchBuild is one build key of a search.
type SearchBuild struct {
	CPV      string     `json:"cpv"`
	BuildKey keys.Build `json:"build_key"`
	// Verdict is the trust decision here (allowed, unknown, disputed …).
	Verdict string `json:"verdict"`
	// Votes counts the distinct peers whose attestation of the leading
	// content counts under the policy; Threshold is what allowing needs.
	Votes     int `json:"votes"`
	Threshold int `json:"threshold"`
	// Weight is what those votes weigh, in thousandths of an established
	// attester's (trust.FullWeight): what is compared with Threshold.
	Weight int `json:"weight"`
	// Builders counts every distinct attester, whatever content it names.
	Builders int `json:"builders"`
	// VariantKey is the build's variant; Wanted counts the distinct peers
	// whose demand (usage vote, signed within the last 30 days) names it.
	VariantKey keys.Variant `json:"variant_key,omitempty"`
	Wanted     int          `json:"wanted"`
	// Holders counts the other peers the DHT names as serving a copy (this
	// machine's own copy is in Here), or -1 when
	// the lookup failed; FetchedCopies those of them that did not attest
	// it: peers that fetched the build and serve it on. It is the demand
	// the network can see — a consume-mode peer fetches without serving,
	// so it is a lower bound.
	Holders       int `json:"holders"`
	FetchedCopies int `json:"fetched_copies"`
	// Here says what this machine has of it: "built here", "cached" or "".
	Here string `json:"here,omitempty"`
	// NotListed says why the gateway's index leaves this allowed build
	// out, when it does.
	NotListed string `json:"not_listed,omitempty"`
}

// NothingFound says why a find or search has nothing for this machine:
// its platform and the settings that make it, and the platforms of the
// connected peers that do hold the package, with the settings that differ.
type NothingFound struct {
	Platform string            `json:"platform"`
	Settings map[string]string `json:"settings"`
	// PeersAsked and PeersAnswered count the connected peers asked.
	PeersAsked    int             `json:"peers_asked"`
	PeersAnswered int             `json:"peers_answered"`
	Elsewhere     []OtherPlatform `json:"elsewhere,omitempty"`
}

// OtherPlatform is one platform of connected peers that hold builds of
// the package.
type OtherPlatform struct {
	Platform string   `json:"platform"`
	Peers    []string `json:"peers"`
	// CPVs are what those peers hold that matched.
	CPVs []string `json:"cpvs"`
	// Differs lists the settings of that platform unlike this machine's.
	Differs []SettingDiff `json:"differs"`
}

// SettingDiff is one setting (CHOST, CFLAGS …) here and on another
// platform.
type SettingDiff struct {
	Setting string `json:"setting"`
	Here    string `json:"here"`
	There   string `json:"there"`
}
