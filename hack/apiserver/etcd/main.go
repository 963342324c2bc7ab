// Command etcd is etcd's own server, built from the Go module proxy at a
// pinned version. The test API server needs an etcd whose watches behave as
// upstream Kubernetes expects; Debian's etcd 3.4 breaks them, so the test
// harness builds this instead of installing a package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
