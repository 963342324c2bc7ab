package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ostreedev/ostree-go/pkg/otbuiltin"
	"github.com/spf13/cobra"

	"github.com/explodefs/explodefs/explode/ostree"
	"github.com/explodefs/explodefs/explode/ostree/libostree"
)

func newCheckoutCommand() *cobra.Command {
	var stateDir, repo string
	cmd := &cobra.Command{
		Use:   "checkout NAMESPACE/STREAM/TAG DIR",
		Short: "Check out a tag's OSTree commit as a real root filesystem, for runc",
		Long: `checkout writes the commit that explodefs/tags/NAMESPACE/STREAM/TAG names into
DIR, which must not exist. In a bare repository (the daemon runs as root) the
checkout hard-links the repository's objects, so it costs no copy and must be
treated as read-only: writing a file of it writes the object every other
checkout and image shares. Give runc a read-only root (root.readonly) or an
overlay on top of it.

The same checkout with the ostree CLI:

  ostree --repo=REPO checkout --require-hardlinks explodefs/tags/NAMESPACE/STREAM/TAG DIR

(with -U instead of --require-hardlinks for a bare-user repository).`,
		Args: cobra.ExactArgs(2),
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd.Flags())
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if repo == "" {
				repo = filepath.Join(stateDir, "ostree")
			}
			return checkout(repo, args[0], args[1])
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", "/var/lib/explodefs/state", "the daemon's state directory")
	f.StringVar(&repo, "ostree-repo", "", "the daemon's OSTree repository; default <state-dir>/ostree")
	legacyEnv(f, "ostree-repo", "OSTREE_REPO_PATH")
	bindEnv(f)
	return cmd
}

// checkout resolves the tag's ref through the project's binding, which
// says clearly when a tag is not committed yet, and checks it out with
// ostree-go. ostree-go leaks its repository and options live in globals,
// which a daemon cannot afford but a command that exits right after can.
func checkout(repoPath, tag, dir string) error {
	parts := strings.Split(tag, "/")
	if len(parts) != 3 || slicesContainEmpty(parts) {
		return fmt.Errorf("tag %q: want NAMESPACE/STREAM/TAG", tag)
	}
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("checkout of %s: %s already exists", tag, dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ref := ostree.TagRef(parts[0], parts[1], parts[2])
	repo, err := libostree.Open(repoPath)
	if err != nil {
		return err
	}
	commit, found, err := repo.Resolve(ref)
	mode := repo.Mode()
	repo.Close()
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("tag %s has no commit in %s yet (ref %s); `explodefs status` shows its materialization", tag, repoPath, ref)
	}
	opts := otbuiltin.NewCheckoutOptions()
	if mode == libostree.BareUser || os.Geteuid() != 0 {
		opts.UserMode = true
	} else {
		opts.RequireHardlinks = true
	}
	if err := otbuiltin.Checkout(repoPath, dir, commit.String(), opts); err != nil {
		return fmt.Errorf("checkout of %s (commit %s) into %s: %w", tag, commit, dir, err)
	}
	fmt.Printf("checked out %s (commit %s) into %s\n", tag, commit, dir)
	return nil
}

func slicesContainEmpty(parts []string) bool {
	for _, p := range parts {
		if p == "" {
			return true
		}
	}
	return false
}
