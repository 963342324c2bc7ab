package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/status"
)

func newStatusCommand() *cobra.Command {
	var server string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the state of every image and layer of a running daemon",
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get("http://" + server + "/status")
			if err != nil {
				return fmt.Errorf("asking the daemon at %s: %w", server, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("daemon at %s: %s: %s", server, resp.Status, body)
			}
			if asJSON {
				_, err := os.Stdout.Write(body)
				return err
			}
			var rep status.Report
			if err := json.Unmarshal(body, &rep); err != nil {
				return fmt.Errorf("daemon at %s sent unreadable status: %w", server, err)
			}
			printReport(os.Stdout, rep)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "listen", defaultListen, "address of the daemon's HTTP listener")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	bindEnv(cmd.Flags())
	return cmd
}

func printReport(w io.Writer, rep status.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSTATE\tPROGRESS\tFILES\tOSTREE\tREFS")
	for _, img := range rep.Images {
		refs := "-"
		if len(img.Refs) > 0 {
			refs = img.Refs[0]
			if len(img.Refs) > 1 {
				refs += fmt.Sprintf(" (+%d)", len(img.Refs)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", short(img.Digest.String()), img.State,
			progress(img.BytesDone, img.BytesTotal), img.Files, materialized(img.Materialized), refs)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tSTATE\tTYPE\tPROGRESS\tENTRIES")
	for _, l := range rep.Layers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", short(l.Digest.String()), l.State, l.Compression,
			progress(l.BytesDone, l.BytesTotal), l.Entries)
	}
	tw.Flush()
	for _, img := range rep.Images {
		if img.Reason == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s failed (attempt %d): %s\n", img.Digest, img.Attempts, img.Reason)
		switch {
		case !img.NextRetry.IsZero():
			fmt.Fprintf(w, "  next retry at %s\n", img.NextRetry.Format(time.RFC3339))
		case img.Permanent:
			fmt.Fprintln(w, "  tried again when its blobs or sources change")
		}
	}
	for _, st := range rep.Streams {
		fmt.Fprintf(w, "\nstream %s cannot be read since %s (showing its last good state): %s\n",
			st.Name, st.Since.Format(time.RFC3339), st.Reason)
	}
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func progress(done, total int64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f/%.1f MB (%d%%)", float64(done)/1e6, float64(total)/1e6, done*100/total)
}

// materialized summarizes an image's OSTree commit for the table.
func materialized(m *status.Materialization) string {
	switch {
	case m == nil:
		return "-"
	case m.State == "running" && m.BytesTotal > 0:
		return "running " + progress(m.BytesDone, m.BytesTotal)
	case m.State == "done":
		return "done " + m.Commit[:min(12, len(m.Commit))]
	}
	return m.State
}
