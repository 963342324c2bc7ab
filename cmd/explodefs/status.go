package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/status"
)

func newStatusCommand() *cobra.Command {
	var server string
	var asJSON bool
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the state of every image and layer of a running daemon",
		Long: `status prints one line per tag (namespace/stream:tag) and per image of a
stream's history: the image, its state, how far its layers are indexed,
its OSTree commit, and why it failed; then every layer, and the full
reasons. --watch redraws it in place until interrupted.`,
		Args: cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 10 * time.Second}
			if asJSON {
				body, err := fetchStatus(client, server)
				if err != nil {
					return err
				}
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			for {
				body, err := fetchStatus(client, server)
				if err != nil {
					return err
				}
				var rep status.Report
				if err := json.Unmarshal(body, &rep); err != nil {
					return fmt.Errorf("daemon at %s sent unreadable status: %w", server, err)
				}
				var out bytes.Buffer
				printReport(&out, rep)
				if watch > 0 {
					// Home the cursor and clear the screen, then draw
					// the whole table at once so it does not flicker.
					fmt.Fprintf(cmd.OutOrStdout(), "\x1b[H\x1b[2J%s  (every %v; Ctrl-C ends)\n\n", time.Now().Format(time.TimeOnly), watch)
				}
				if _, err := cmd.OutOrStdout().Write(out.Bytes()); err != nil || watch <= 0 {
					return err
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(watch):
				}
			}
		},
	}
	cmd.Flags().StringVar(&server, "listen", defaultListen, "address of the daemon's HTTP listener")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	cmd.Flags().DurationVar(&watch, "watch", 0, "redraw the table this often (e.g. 1s) until interrupted; 0 prints it once")
	bindEnv(cmd.Flags())
	return cmd
}

// fetchStatus reads the daemon's JSON status.
func fetchStatus(client *http.Client, server string) ([]byte, error) {
	resp, err := client.Get("http://" + server + "/status")
	if err != nil {
		return nil, fmt.Errorf("asking the daemon at %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's status at %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("daemon at %s: %s: %s", server, resp.Status, body)
	}
	return body, nil
}

func printReport(w io.Writer, rep status.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tIMAGE\tSTATE\tINDEXED\tOSTREE\tFILES\tREASON")
	for _, row := range tagRows(rep) {
		img := row.image
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", shortRef(row.ref), short(img.Digest.String()), img.State,
			indexed(img), materialized(img.Materialized), img.Files, oneLine(img.Reason, 60))
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

// tagRow is one line of the status table: an image under one of its
// names (namespace/stream:tag, or its digest in a stream's history).
type tagRow struct {
	ref   string
	image status.Image
}

// tagRows lists every image under each of its names, sorted by name;
// an image no stream names any more is listed once as "-".
func tagRows(rep status.Report) []tagRow {
	var rows []tagRow
	for _, img := range rep.Images {
		if len(img.Refs) == 0 {
			rows = append(rows, tagRow{"-", img})
		}
		for _, ref := range img.Refs {
			rows = append(rows, tagRow{ref, img})
		}
	}
	slices.SortStableFunc(rows, func(a, b tagRow) int { return strings.Compare(a.ref, b.ref) })
	return rows
}

// indexed is how far the image's layer passes are, as a bar while they run.
func indexed(img status.Image) string {
	switch img.State {
	case status.Ready:
		return "100%"
	case status.Indexing:
		return bar(img.BytesDone, img.BytesTotal)
	}
	return "-"
}

// bar draws done of total as a ten-step progress bar with its percentage.
func bar(done, total int64) string {
	if total <= 0 {
		return "[          ]"
	}
	pct := min(100, done*100/total)
	return fmt.Sprintf("[%-10s] %d%%", strings.Repeat("#", int(pct/10)), pct)
}

// oneLine shortens a reason for the table; the full text follows it.
func oneLine(s string, n int) string {
	if s == "" {
		return "-"
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// shortRef shortens the digest of a history name (ns/stream@sha256:…);
// the IMAGE column has the digest already.
func shortRef(ref string) string {
	if i := strings.Index(ref, "@sha256:"); i >= 0 && len(ref) > i+8+12 {
		return ref[:i+8+12]
	}
	return ref
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
	case m.State == "running":
		return "running " + bar(m.BytesDone, m.BytesTotal)
	case m.State == "done":
		return "done " + m.Commit[:min(12, len(m.Commit))]
	}
	return m.State
}
