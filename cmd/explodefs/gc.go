package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/ostree"
)

func newGCCommand() *cobra.Command {
	var server string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete OSTree refs of images no stream names and prune unreachable objects, now",
		Long: `gc asks a running daemon to delete the refs and materialization records of
images and tags that no stream names any more, and to prune every OSTree
object no ref reaches. The daemon also does this every --prune-interval.
It runs between two materializations, so it may wait for the one in progress.`,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: timeout}
			resp, err := client.Post("http://"+server+"/gc", "application/json", nil)
			if err != nil {
				return fmt.Errorf("asking the daemon at %s: %w", server, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			switch resp.StatusCode {
			case http.StatusOK:
			case http.StatusNotFound, http.StatusMethodNotAllowed:
				return fmt.Errorf("daemon at %s does not materialize images (--materialize=false)", server)
			default:
				return fmt.Errorf("daemon at %s: %s: %s", server, resp.Status, body)
			}
			var st ostree.GCStats
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("daemon at %s sent an unreadable answer: %w", server, err)
			}
			fmt.Printf("deleted %d records; pruned %d of %d objects (%d bytes)\n", st.Records, st.Pruned, st.Objects, st.Bytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "listen", defaultListen, "address of the daemon's HTTP listener")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for the daemon")
	bindEnv(cmd.Flags())
	return cmd
}
