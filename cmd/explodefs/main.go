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
	root.AddCommand(newServeCommand(), newStatusCommand(), newCheckoutCommand(), newGCCommand(), newVersionCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "explodefs:", err)
		os.Exit(1)
	}
}

// envName is the environment variable that sets a flag.
func envName(flag string) string {
	return "EXPLODEFS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// legacyEnvKey annotates a flag with os-explode's variables for it, which
// keep their meaning.
const legacyEnvKey = "explodefs/legacy-env"

// legacyEnv makes the variables names also set flag name of fs, after its
// EXPLODEFS_ variable.
func legacyEnv(fs *pflag.FlagSet, name string, names ...string) {
	if err := fs.SetAnnotation(name, legacyEnvKey, names); err != nil {
		panic(err) // a typo in a flag name: a programming error
	}
}

// envNames lists the variables that set f, in order of precedence.
func envNames(f *pflag.Flag) []string {
	return append([]string{envName(f.Name)}, f.Annotations[legacyEnvKey]...)
}

// bindEnv gives every flag of fs an environment variable, named in its
// help text. A flag given on the command line wins over the variable.
func bindEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " [$" + strings.Join(envNames(f), ", $") + "]"
	})
}

func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		for _, name := range envNames(f) {
			v, ok := os.LookupEnv(name)
			if !ok {
				continue
			}
			if serr := fs.Set(f.Name, v); serr != nil {
				// The value is not echoed: it may be a secret.
				err = fmt.Errorf("$%s is not a valid --%s: %w", name, f.Name, serr)
			}
			return
		}
	})
	return err
}
