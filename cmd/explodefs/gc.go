package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/gc"
)

func newGCCommand() *cobra.Command {
	var server string
	var timeout time.Duration
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Collect what no stream references, now: layer index records and caches, OSTree refs and objects",
		Long: `gc asks a running daemon to collect what no stream references any more:
the index records and decompressed caches of layers no wanted image has
held for --gc-grace (of serve), the OSTree refs and materialization
records of images and tags no stream names, and every OSTree object no
ref reaches. The daemon also does this every --gc-interval. The OSTree
part runs between two materializations, so it may wait for the one in
progress. With --dry-run nothing is deleted, and gc lists what would go
and how much space it would free.`,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: timeout}
			url := "http://" + server + "/gc"
			if dryRun {
				url += "?dry-run=true"
			}
			resp, err := client.Post(url, "application/json", nil)
			if err != nil {
				return fmt.Errorf("asking the daemon at %s: %w", server, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("daemon at %s: %s: %s", server, resp.Status, strings.TrimSpace(string(body)))
			}
			var rep gc.Report
			if err := json.Unmarshal(body, &rep); err != nil {
				return fmt.Errorf("daemon at %s sent an unreadable answer: %w", server, err)
			}
			printGCReport(cmd.OutOrStdout(), rep)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "listen", defaultListen, "address of the daemon's HTTP listener")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for the daemon")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "delete nothing; list what would go and the space it would free")
	bindEnv(cmd.Flags())
	return cmd
}

// printGCReport prints what a collection did, or would do, for a person.
func printGCReport(w io.Writer, rep gc.Report) {
	verb := map[bool]string{false: "deleted", true: "would delete"}[rep.DryRun]
	l := rep.Layers
	fmt.Fprintf(w, "layers: %s %d (%s)", verb, len(l.Layers), byteCount(l.Bytes))
	if l.Waiting > 0 {
		fmt.Fprintf(w, "; %d more no image holds wait out the %v grace period", l.Waiting, rep.Grace)
	}
	fmt.Fprintln(w)
	if len(l.Layers) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  LAYER\tINDEX\tCACHE\tUNREFERENCED SINCE")
		for _, c := range l.Layers {
			since := "-  (a cache the index lacks)"
			if !c.Unreferenced.IsZero() {
				since = c.Unreferenced.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Digest, byteCount(c.IndexBytes), byteCount(c.CacheBytes), since)
		}
		tw.Flush()
	}
	if o := rep.OSTree; o != nil {
		prune := map[bool]string{false: "pruned", true: "would prune"}[rep.DryRun]
		fmt.Fprintf(w, "ostree: %s %d refs and %d records; %s %d of %d objects (%s)\n",
			verb, len(o.Refs), o.Records, prune, o.Pruned, o.Objects, byteCount(int64(o.Bytes)))
		for _, ref := range o.Refs {
			fmt.Fprintf(w, "  %s\n", ref)
		}
	} else {
		fmt.Fprintln(w, "ostree: not materializing (--materialize=false)")
	}
	fmt.Fprintf(w, "total: %s %s\n", map[bool]string{false: "freed", true: "would free"}[rep.DryRun], byteCount(rep.Bytes()))
}

// byteCount prints n in binary units.
func byteCount(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
