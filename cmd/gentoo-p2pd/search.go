package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

func newSearchCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "search TERM",
		Short: "List the builds the network has for this machine's platform, like eix",
		Long: `search lists the builds of this machine's platform (its CHOST and *FLAGS)
whose category/package-version contains TERM, from the catalog the daemon
keeps: for each, the trust verdict, the votes that count against the
threshold, how many peers built it, and how many peers hold a copy — of
which "fetched" are those that did not build it but fetched it and serve it
on (the demand the network can see; a consume-mode peer fetches without
serving, so it is a lower bound).

When nothing matches, it says why: this machine's platform and its
settings, and which connected peers of other platforms hold the package,
with the settings that differ. It then exits with status 3.`,
		Example: `  gentoo-p2pd search hello
  gentoo-p2pd search app-misc/
  gentoo-p2pd search dev-libs/openssl --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return query(cmd, api.PathSearch, args[0], asJSON, writeSearch, func(r api.SearchResult) bool { return len(r.Builds) == 0 })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

func writeSearch(w io.Writer, res api.SearchResult) {
	if len(res.Builds) == 0 {
		fmt.Fprintf(w, "no build matching %q for this machine's platform\n", res.Query)
		writeWhy(w, res.Why)
		writeWanted(w, res.Wanted)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CPV\tVERDICT\tWEIGHT\tBUILT BY\tWANTED\tHOLDERS\tFETCHED\tHERE\tBUILD KEY")
	for _, b := range res.Builds {
		holders, fetched := "?", "?"
		if b.Holders >= 0 {
			holders, fetched = fmt.Sprint(b.Holders), fmt.Sprint(b.FetchedCopies)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%d\t%d\t%d\t%s\t%s\t%s\t%s\n", b.CPV, b.Verdict, trust.Weight(b.Weight), b.Threshold, b.Builders,
			b.Wanted, holders, fetched, orDash(b.Here), b.BuildKey)
	}
	_ = tw.Flush()
	for _, b := range res.Builds {
		if b.NotListed != "" {
			fmt.Fprintf(w, "%s (%s): allowed but not offered to portage: %s\n", b.CPV, short(string(b.BuildKey)), b.NotListed)
		}
	}
	if res.More > 0 {
		fmt.Fprintf(w, "… and %d more builds: narrow the term\n", res.More)
	}
	writeWanted(w, res.Wanted)
	fmt.Fprintln(w, "VOTES: peers whose attestation counts, of the threshold; BUILT BY: every peer that attested it;")
	fmt.Fprintln(w, "WANTED: peers whose demand (usage vote, last 30 days) names its variant;")
	fmt.Fprintln(w, "HOLDERS: other peers serving a copy (DHT); FETCHED: holders that fetched it rather than built it.")
	for _, e := range res.Errors {
		fmt.Fprintf(w, "note: %s\n", e)
	}
}

// writeWanted lists the variants peers want that no listed build is of.
func writeWanted(w io.Writer, wanted []api.WantedVariant) {
	if len(wanted) == 0 {
		return
	}
	fmt.Fprintln(w, "wanted, not built by anyone here knows of:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CPV\tWANTED\tBUILT BY\tUSE\tVARIANT KEY")
	for _, v := range wanted {
		fmt.Fprintf(tw, "%s\t%d\t0\t%s\t%s\n", v.CPV, v.Wanters, orDash(strings.Join(v.USE, " ")), v.VariantKey)
	}
	_ = tw.Flush()
}

// writeWhy says why nothing was found: this machine's platform, and the
// connected peers of other platforms that hold the package.
func writeWhy(w io.Writer, why *api.NothingFound) {
	if why == nil {
		return
	}
	fmt.Fprintf(w, "this machine's platform: %s\n", why.Platform)
	for _, k := range []string{"CHOST", "CFLAGS", "CXXFLAGS", "FFLAGS", "FCFLAGS", "LDFLAGS"} {
		if v, ok := why.Settings[k]; ok {
			fmt.Fprintf(w, "  %-9s %q\n", k, v)
		}
	}
	if len(why.Elsewhere) == 0 {
		fmt.Fprintf(w, "none of the %d connected peer%s asked (%d answered) holds it on any platform\n",
			why.PeersAsked, plural(why.PeersAsked), why.PeersAnswered)
		return
	}
	n := 0
	for _, op := range why.Elsewhere {
		n += len(op.Peers)
	}
	fmt.Fprintf(w, "%d connected peer%s of other platforms hold%s it; builds are shared only between machines of one platform:\n",
		n, plural(n), map[bool]string{true: "s", false: ""}[n == 1])
	for _, op := range why.Elsewhere {
		fmt.Fprintf(w, "  platform %s: %d peer%s, %s\n", op.Platform, len(op.Peers), plural(len(op.Peers)), strings.Join(op.CPVs, " "))
		for _, d := range op.Differs {
			fmt.Fprintf(w, "    %s differs: here %q, there %q\n", d.Setting, d.Here, d.There)
		}
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
