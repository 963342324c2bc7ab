package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of explodefs and of the Go toolchain that built it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, ok := debug.ReadBuildInfo()
			if !ok {
				return fmt.Errorf("the binary carries no build information")
			}
			printVersion(cmd.OutOrStdout(), info)
			return nil
		},
	}
}

// printVersion prints the module version and, when the binary was built
// in a git checkout, the commit; a build from a tarball has none, and
// says so rather than failing.
func printVersion(w io.Writer, info *debug.BuildInfo) {
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	commit := "unknown (built outside a git checkout)"
	if rev := settings["vcs.revision"]; rev != "" {
		commit = rev
		if settings["vcs.modified"] == "true" {
			commit += " (modified)"
		}
	}
	fmt.Fprintf(w, "explodefs %s\ncommit: %s\ngo: %s %s/%s\n", info.Main.Version, commit,
		info.GoVersion, settings["GOOS"], settings["GOARCH"])
}
