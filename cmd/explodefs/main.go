// Command explodefs serves OpenShift image streams and OCI layouts as a
// lazily read, read-only FUSE tree.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	root := &cobra.Command{
		Use:           "explodefs",
		Short:         "Browse container images as read-only directory trees, read lazily from their layers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCommand(), newStatusCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "explodefs:", err)
		os.Exit(1)
	}
}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	return "EXPLODEFS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// bindEnv gives every flag of fs an environment variable, named in its
// help text. A flag given on the command line wins over the variable.
func bindEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += fmt.Sprintf(" [$%s]", envName(f.Name))
	})
}

func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || f.Changed || err != nil {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("$%s: %w", envName(f.Name), serr)
		}
	})
	return err
}
