package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/trust"
)

func newStatusCmd() *cobra.Command {
	var asJSON, watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the running daemon is doing",
		Long: `status prints what the running daemon is doing. With --watch it redraws
the status every --interval until Ctrl-C (which ends it with exit status 0):
on a terminal each draw replaces the last; piped, one status follows another,
separated by a blank line (with --json, one JSON document each).`,
		Example: `  gentoo-p2pd status
  gentoo-p2pd status --json | jq .peers
  gentoo-p2pd status --watch --interval 5s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkInterval(watch, interval, cmd.Flags().Changed("interval")); err != nil {
				return err
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			draw := fetchStatus(c, asJSON)
			if watch {
				return watchStatus(cmd.Context(), cmd.OutOrStdout(), interval, isTerminal(cmd.OutOrStdout()), draw)
			}
			return draw(cmd.Context(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the daemon's status struct as JSON")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "redraw the status every --interval until Ctrl-C")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "with --watch, redraw every `DURATION`")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

func newPeersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "peers",
		Short:   "List connected peers",
		Example: "  gentoo-p2pd peers",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var res api.PeersResponse
			if err := c.Get(cmd.Context(), api.PathPeers, nil, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			if len(res.Peers) == 0 {
				fmt.Fprintln(w, "no peers connected")
			}
			for _, p := range res.Peers {
				fmt.Fprintf(w, "%s  %-8s %s\n", p.ID, p.Direction, strings.Join(p.Addrs, " "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(cmd.Flags(), clientFlags...)
	cmd.AddCommand(newPeersAddCmd())
	return cmd
}

func newFindCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "find CPV|BUILDKEY",
		Short: "Find who provides a build, and the attestations for it",
		Long: `find looks a build up by its CPV or build key: the peers that provide it
(DHT), the attestations this daemon holds for it and the trust verdict.

When nothing is known for this machine's platform, it says why: the
platform (a hash of CHOST and *FLAGS) and its settings, and which connected
peers of other platforms hold the package, with the settings that differ.
It then exits with status 3.`,
		Example: `  gentoo-p2pd find app-misc/hello-1.0
  gentoo-p2pd find bafkrei... --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return query(cmd, api.PathFind, args[0], asJSON, writeFind, func(r api.FindResult) bool { return len(r.Builds) == 0 })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

func writeFind(w io.Writer, res api.FindResult) {
	if len(res.Builds) == 0 {
		fmt.Fprintf(w, "nothing known about %s for this machine's platform\n", res.Query)
		writeWhy(w, res.Why)
	}
	for _, b := range res.Builds {
		fmt.Fprintf(w, "%s  %s  verdict: %s\n", b.CPV, b.BuildKey, b.Verdict)
		fmt.Fprintf(w, "  providers: %d\n", len(b.Providers))
		for _, p := range b.Providers {
			fmt.Fprintf(w, "    %s\n", p)
		}
		fmt.Fprintf(w, "  wanted by: %d peer%s (demand for its variant, last 30 days)\n", b.Wanted, plural(b.Wanted))
		fmt.Fprintf(w, "  attestations: %d\n", len(b.Attestations))
		for _, a := range b.Attestations {
			fmt.Fprintf(w, "    %s  content %s  %s %d bytes  %s\n", a.Attester, short(a.Content), a.Format, a.Size, a.Time.Format(time.RFC3339))
		}
	}
	if len(res.Builds) > 0 && res.Why != nil {
		fmt.Fprintf(w, "none of these builds is for this machine's platform\n")
		writeWhy(w, res.Why)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "note: %s\n", e)
	}
}

func short(s string) string {
	if len(s) > 23 {
		return s[:10] + "…" + s[len(s)-10:]
	}
	return s
}

func newAnnounceCmd() *cobra.Command {
	var asJSON bool
	var installed string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "announce FILE | --installed CPV",
		Short: "Tell the daemon about a binpkg portage just wrote, a source build or a binary install (the bashrc hook's call)",
		Example: `  gentoo-p2pd announce /var/cache/binpkgs/app-misc/hello/hello-1.0-1.gpkg.tar
  gentoo-p2pd announce --installed app-misc/hello-1.0 --timeout 2s`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.AnnounceRequest{Installed: installed}
			if len(args) == 1 {
				req.Path = args[0]
			}
			if req.Path == "" && req.Installed == "" {
				return fmt.Errorf("announce: give a binpkg path or --installed CPV")
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel func()
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var res api.AnnounceResult
			if err := c.Post(ctx, api.PathAnnounce, req, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			if res.BuildKey != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "announced %s\n  build key   %s\n  variant key %s\n  content     %s\n", res.CPV, res.BuildKey, res.VariantKey, res.Content)
			}
			if res.Note != "" {
				fmt.Fprintln(cmd.OutOrStdout(), res.Note)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&installed, "installed", "", "report a binary install of `CPV` instead (increments the store's installs counter and records demand for the installed variant)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after `DURATION` (the bashrc hook uses 2s)")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

func newFetchCmd() *cobra.Command {
	var asJSON bool
	var dir string
	cmd := &cobra.Command{
		Use:   "fetch BUILDKEY|CPV",
		Short: "Fetch the trusted build from peers (verified piece by piece)",
		Long: `fetch asks the daemon for the build its trust policy allows for a build
key or CPV, downloads it from every peer that holds it (each piece verified
against the attested Merkle root, then the whole file, then the image and
metadata digests) and, with --to, copies it into DIR. A progress bar shows on
a terminal; otherwise progress is printed as plain lines.

Interrupting fetch (Ctrl-C) does not stop the download: the daemon
finishes it in the background (other requests, portage's among them, may
be waiting for the same build); running the same fetch again joins the
download under way, or uses the finished one.`,
		Example: `  gentoo-p2pd fetch app-misc/hello-1.0
  gentoo-p2pd fetch bafkrei... --to /tmp`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if dir != "" {
				if dir, err = absDir(dir); err != nil {
					return err
				}
			}
			w := cmd.OutOrStdout()
			bar := newProgressBar(cmd.ErrOrStderr(), args[0])
			var res *api.FetchResult
			err = c.PostStream(cmd.Context(), api.PathFetch, api.FetchRequest{Query: args[0], Dir: dir, Progress: true}, func(line []byte) error {
				var ev api.FetchEvent
				if err := json.Unmarshal(line, &ev); err != nil {
					return fmt.Errorf("daemon sent a bad progress line: %w", err)
				}
				switch {
				case ev.Error != "":
					return ev.Err()
				case ev.Progress != nil:
					bar.update(*ev.Progress)
				case ev.Result != nil:
					res = ev.Result
				}
				return nil
			})
			bar.finish()
			if err != nil && cmd.Context().Err() != nil {
				// Interrupted (Ctrl-C): the daemon's transfer is shared and
				// runs under the daemon's own context, not this request's,
				// so it goes on; only the copy --to DIR is not made.
				fmt.Fprint(cmd.ErrOrStderr(), interruptedFetchNote(args[0], bar.started(), dir))
				return exitError{code: exitInterrupted}
			}
			if err != nil {
				return err
			}
			if res == nil {
				return errors.New("fetch: the daemon closed the stream without a result")
			}
			if asJSON {
				return printJSON(w, res)
			}
			fmt.Fprintf(w, "%s -> %s\n  %d bytes from %d peer(s) in %s, %d piece(s) reused\n  content %s\n",
				res.CPV, res.Path, res.Size, res.Providers, res.Took.Round(time.Millisecond), res.PiecesReused, res.Content)
			for _, b := range res.BadPeers {
				fmt.Fprintf(w, "  dropped %s\n", b)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().StringVar(&dir, "to", "", "copy the fetched file into `DIR`")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

// interruptedFetchNote is what fetch says when it is interrupted. The
// daemon's transfer does not end with the request (materialize runs it
// under the daemon's context, shared by every caller), so it goes on.
func interruptedFetchNote(query string, started bool, dir string) string {
	var b strings.Builder
	if started {
		fmt.Fprintf(&b, "interrupted: the daemon goes on downloading %s in the background", query)
	} else {
		fmt.Fprintf(&b, "interrupted: if the daemon had begun downloading %s, it finishes in the background", query)
	}
	if dir != "" {
		fmt.Fprintf(&b, "; nothing was copied to %s", dir)
	}
	b.WriteString(";\nrun the same fetch again to wait for it (it joins the download under way, or uses the finished one)\n")
	return b.String()
}

func newTrustCmd() *cobra.Command {
	trust := &cobra.Command{
		Use:   "trust",
		Short: "Explain trust decisions and the policy",
		Example: `  gentoo-p2pd trust explain app-misc/hello-1.0
  gentoo-p2pd trust policy
  gentoo-p2pd trust vouch 12D3KooW... --expires 90d`,
	}
	var asJSON bool
	explain := &cobra.Command{
		Use:   "explain BUILDKEY|CPV",
		Short: "Show the votes for a build, which rule decided, and rebuilds that disagree with this node's build",
		Example: `  gentoo-p2pd trust explain app-misc/hello-1.0
  gentoo-p2pd trust explain bafkrei... --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var ex api.Explanation
			if err := c.Get(cmd.Context(), api.PathTrustExplain, url.Values{"q": {args[0]}}, &ex); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ex)
			}
			fmt.Fprint(cmd.OutOrStdout(), ex.Text)
			return nil
		},
	}
	explain.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(explain.Flags(), clientFlags...)
	var policyJSON bool
	policy := &cobra.Command{
		Use:     "policy",
		Short:   "Show the effective trust policy",
		Example: "  gentoo-p2pd trust policy",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var p api.PolicyView
			if err := c.Get(cmd.Context(), api.PathTrustPolicy, nil, &p); err != nil {
				return err
			}
			if policyJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "threshold          %d: the weight of agreeing attesters (an established one weighs 1)\n", p.Threshold)
			fmt.Fprintf(w, "dispute            %d: the weight for another content of the same build environment that makes a dispute\n", p.Dispute)
			fmt.Fprintf(w, "fresh keys weigh   %d %% (fresh_weight); full standing after %d days of agreement\n", p.FreshWeight, p.StandingDays)
			fmt.Fprintf(w, "vouched peers      %s\n", listOrNone(p.VouchedPeers))
			fmt.Fprintf(w, "signed vouches     pass on %d %% per hop, up to %d hop(s) (vouch_decay, vouch_hops)\n", p.VouchDecay, p.VouchHops)
			var mine []string
			for _, v := range p.Vouches {
				if v.Active {
					mine = append(mine, fmt.Sprintf("%s until %s", v.Vouchee, v.Expires.Format(time.DateOnly)))
				}
			}
			fmt.Fprintf(w, "this node vouches  %s\n", listOrNone(mine))
			fmt.Fprintf(w, "require signer     %t\n", p.RequireSigner)
			fmt.Fprintf(w, "distinct networks  %t\n", p.DistinctNetworks)
			fmt.Fprintf(w, "signers            %s\n", listOrNone(p.Signers))
			fmt.Fprintf(w, "OpenPGP keys       %s\n", listOrNone(p.PGPKeys))
			fmt.Fprintf(w, "trusted peers      %s\n", listOrNone(p.TrustedPeers))
			fmt.Fprintf(w, "blocked peers      %s\n", listOrNone(p.BlockedPeers))
			fmt.Fprintf(w, "overrides          %s\n", listOrNone(p.Overrides))
			return nil
		},
	}
	policy.Flags().BoolVar(&policyJSON, "json", false, "print JSON")
	addConfigFlags(policy.Flags(), clientFlags...)
	trust.AddCommand(explain, policy, newVouchCmd())
	return trust
}

func newVouchCmd() *cobra.Command {
	var expires, pgpImport, pgpSig string
	var undo, asJSON, pgpStatement bool
	cmd := &cobra.Command{
		Use:   "vouch PEER | --pgp-import STATEMENT",
		Short: "Sign and gossip this node's word that PEER is a real, independent builder",
		Long: `vouch signs a vouch for PEER with this node's peer key and gossips it.
Peers that count this node fully (it is their trusted or vouched peer, or
has full standing there) give PEER part of a vote: trust.vouch_decay
percent, less per further hop. Vouched identities never allow or dispute
a build without an established attester. --undo revokes an earlier vouch.

An OpenPGP key of trust.vouch_keyring (a Gentoo developer's) can vouch
too: --pgp-statement writes the statement to sign, gpg --detach-sign
signs it, and --pgp-import hands statement and signature to the daemon,
which checks them against its keyring and gossips the vouch.`,
		Example: `  gentoo-p2pd trust vouch 12D3KooW...
  gentoo-p2pd trust vouch 12D3KooW... --expires 90d
  gentoo-p2pd trust vouch --undo 12D3KooW...
  gentoo-p2pd trust vouch 12D3KooW... --pgp-statement > vouch.stmt
  gpg --detach-sign vouch.stmt
  gentoo-p2pd trust vouch --pgp-import vouch.stmt`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pgpImport != "" {
				if len(args) > 0 || undo || expires != "" || pgpStatement {
					return fmt.Errorf("--pgp-import takes no PEER, --undo, --expires or --pgp-statement: the statement names them")
				}
				return importPGPVouch(cmd, pgpImport, pgpSig, asJSON)
			}
			if len(args) != 1 {
				return fmt.Errorf("give the PEER to vouch for")
			}
			var ttl time.Duration
			req := api.VouchRequest{Peer: args[0], Undo: undo}
			if expires != "" {
				d, err := parseDays(expires)
				if err != nil {
					return fmt.Errorf("--expires %q: %w", expires, err)
				}
				req.Expires, ttl = d.String(), d
			}
			if pgpStatement {
				return writePGPStatement(cmd, args[0], ttl, undo)
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var v api.VouchView
			if err := c.Post(cmd.Context(), api.PathTrustVouch, req, &v); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			if !v.Active {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked this node's vouch for %s\n", v.Vouchee)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "this node vouches for %s until %s\n", v.Vouchee, v.Expires.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&expires, "expires", "", "`DURATION` the vouch lasts: days (90d) or a Go duration (720h), at most 365d (default 365d)")
	cmd.Flags().BoolVar(&undo, "undo", false, "revoke this node's vouch for PEER")
	cmd.Flags().BoolVar(&pgpStatement, "pgp-statement", false, "write the statement an OpenPGP key signs (gpg --detach-sign) to vouch for PEER, instead of vouching with this node's key")
	cmd.Flags().StringVar(&pgpImport, "pgp-import", "", "give the daemon the `STATEMENT` file and its detached OpenPGP signature (--pgp-signature)")
	cmd.Flags().StringVar(&pgpSig, "pgp-signature", "", "the detached signature of --pgp-import's statement, armored or binary (default: `FILE` STATEMENT.sig, else STATEMENT.asc)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(cmd.Flags(), clientFlags...)
	return cmd
}

// writePGPStatement writes the bytes an OpenPGP key signs to vouch for
// id (to revoke with undo), issued now.
func writePGPStatement(cmd *cobra.Command, id string, ttl time.Duration, undo bool) error {
	p, err := peer.Decode(id)
	if err != nil {
		return fmt.Errorf("%q is not a peer ID: %w", id, err)
	}
	switch {
	case undo:
		ttl = 0
	case ttl == 0:
		ttl = trust.MaxVouchLifetime
	}
	now := time.Now()
	stmt, err := trust.VouchStatement(trust.Vouch{Vouchee: p, Issued: now, Expires: now.Add(ttl)})
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(stmt)
	return err
}

// importPGPVouch hands a signed statement to the daemon.
func importPGPVouch(cmd *cobra.Command, stmtFile, sigFile string, asJSON bool) error {
	stmt, err := os.ReadFile(stmtFile)
	if err != nil {
		return err
	}
	if sigFile == "" {
		sigFile = stmtFile + ".sig"
		if _, err := os.Stat(sigFile); err != nil {
			sigFile = stmtFile + ".asc"
		}
	}
	sig, err := os.ReadFile(sigFile)
	if err != nil {
		return fmt.Errorf("the detached signature: %w", err)
	}
	blob, err := trust.PGPVouchFromStatement(stmt, sig)
	if err != nil {
		return err
	}
	c, err := client(cmd)
	if err != nil {
		return err
	}
	var v api.VouchView
	if err := c.Post(cmd.Context(), api.PathTrustVouch, api.VouchRequest{PGPVouch: blob}, &v); err != nil {
		return err
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), v)
	}
	verb := "vouches for"
	if !v.Active {
		verb = "revokes its vouch for"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s until %s\n", v.Voucher, verb, v.Vouchee, v.Expires.Format(time.RFC3339))
	return nil
}

// parseDays reads "90d" as 90 days, else a Go duration.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("want a positive number of days")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want days (90d) or a positive duration (720h)")
	}
	return d, nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// query asks the daemon's path for q and prints the answer as JSON or for
// people; an answer with nothing in it exits with status 3 (not found).
func query[T any](cmd *cobra.Command, path, q string, asJSON bool, write func(io.Writer, T), empty func(T) bool) error {
	c, err := client(cmd)
	if err != nil {
		return err
	}
	var res T
	if err := c.Get(cmd.Context(), path, url.Values{"q": {q}}, &res); err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(cmd.OutOrStdout(), res); err != nil {
			return err
		}
	} else {
		write(cmd.OutOrStdout(), res)
	}
	if empty(res) {
		return exitError{exitNotFound}
	}
	return nil
}
