package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/gentoo-p2p/gentoo-p2pd/api"
	"github.com/gentoo-p2p/gentoo-p2pd/config"
)

func newCacheCmd() *cobra.Command {
	cache := &cobra.Command{
		Use:   "cache",
		Short: "List the fetched builds in the content cache, or shrink it",
		Example: `  gentoo-p2pd cache ls
  gentoo-p2pd cache gc --to 2GiB`,
	}
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List every cached build: size, last use, whether it is still served",
		Long: `List every build fetched into the content cache, least recently used first
(the order the cache GC evicts in): CPV, build key, size, when it was last
used, its trust verdict now and whether it is still served to peers (allowed;
in mirror mode also undecided builds). Totals and cache.disk_budget follow.`,
		Example: `  gentoo-p2pd cache ls
  gentoo-p2pd cache ls --json | jq '.builds[] | select(.servable | not)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var res api.CacheList
			if err := c.Get(cmd.Context(), api.PathCache, nil, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			writeCacheList(cmd.OutOrStdout(), res, time.Now())
			return nil
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	addConfigFlags(ls.Flags(), clientFlags...)

	var to string
	var gcJSON bool
	gc := &cobra.Command{
		Use:   "gc",
		Short: "Evict least recently used cached builds now, down to the disk budget",
		Long: `Run the cache GC now: evict the least recently used cached builds until the
cache holds at most cache.disk_budget bytes, or the size given with --to.
A file that is also one of your own builds in PKGDIR is never evicted.`,
		Example: `  gentoo-p2pd cache gc
  gentoo-p2pd cache gc --to 500MiB
  gentoo-p2pd cache gc --to 0   # everything not in PKGDIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.CacheGCRequest
			if cmd.Flags().Changed("to") {
				n, err := config.ParseSize(to)
				if err != nil {
					return fmt.Errorf("--to: %w", err)
				}
				req.To = &n
			}
			c, err := client(cmd)
			if err != nil {
				return err
			}
			var res api.CacheGCResult
			if err := c.Post(cmd.Context(), api.PathCacheGC, req, &res); err != nil {
				return err
			}
			if gcJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			writeCacheGC(cmd.OutOrStdout(), res)
			return nil
		},
	}
	gc.Flags().StringVar(&to, "to", "", "shrink the cache to `SIZE` (10GiB, 500MB, 0) instead of cache.disk_budget")
	gc.Flags().BoolVar(&gcJSON, "json", false, "print JSON")
	addConfigFlags(gc.Flags(), clientFlags...)
	cache.AddCommand(ls, gc)
	return cache
}

// writeCacheList renders `cache ls`.
func writeCacheList(w io.Writer, res api.CacheList, now time.Time) {
	if len(res.Builds) == 0 {
		fmt.Fprintln(w, "the cache holds no fetched builds")
	}
	for _, b := range res.Builds {
		served := "served"
		if !b.Servable {
			served = "not served"
		}
		verdict := b.Verdict
		if verdict == "" {
			verdict = "?"
		}
		fmt.Fprintf(w, "%s  %s  %s  used %s  %s (%s)", b.CPV, b.BuildKey, humanBytes(b.Size), ago(now, b.LastUsed), served, verdict)
		if b.OwnBuild {
			fmt.Fprint(w, "  own build in PKGDIR")
		}
		fmt.Fprintln(w)
	}
	budget := "unbounded"
	if res.DiskBudget > 0 {
		budget = humanBytes(res.DiskBudget)
	}
	fmt.Fprintf(w, "%d build(s), %s (%s still served); disk budget %s\n", res.Files, humanBytes(res.Bytes), humanBytes(res.ServableBytes), budget)
}

// ago says how long before now t was, coarsely.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return "never"
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// writeCacheGC renders `cache gc`.
func writeCacheGC(w io.Writer, res api.CacheGCResult) {
	fmt.Fprintf(w, "freed %s: the cache holds %s (was %s, target %s)\n", humanBytes(res.Freed), humanBytes(res.After), humanBytes(res.Before), humanBytes(res.Target))
	if res.Note != "" {
		fmt.Fprintf(w, "note: %s\n", res.Note)
	}
}
