package ocilayout_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/ocilayout"
)

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		dir := t.TempDir()
		for d, b := range blobs {
			p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return ocilayout.New(dir)
	})
}
