package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/gc"
	"github.com/explodefs/explodefs/explode/ostree"
	"github.com/explodefs/explodefs/explode/ostree/libostree"
)

func TestPrintGCReport(t *testing.T) {
	layer := digest.FromString("layer")
	rep := gc.Report{DryRun: true, Grace: time.Hour,
		Layers: controller.LayerCollection{Layers: []controller.CollectedLayer{
			{Digest: layer, IndexBytes: 3 << 20, CacheBytes: 1536, Unreferenced: time.Now()},
		}, Waiting: 2, Bytes: 3<<20 + 1536},
		OSTree: &ostree.GCStats{PruneStats: libostree.PruneStats{Objects: 10, Pruned: 4, Bytes: 2048},
			Refs: []string{"explodefs/tags/ns/s/t"}, Records: 1},
	}
	var b bytes.Buffer
	printGCReport(&b, rep)
	for _, want := range []string{
		"layers: would delete 1 (3.0 MiB)", "2 more no image holds wait out the 1h0m0s grace period",
		layer.String(), "3.0 MiB", "1.5 KiB",
		"ostree: would delete 1 refs and 1 records; would prune 4 of 10 objects (2.0 KiB)", "explodefs/tags/ns/s/t",
		"total: would free 3.0 MiB",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	rep.DryRun, rep.OSTree = false, nil
	printGCReport(&b, rep)
	if out := b.String(); !strings.Contains(out, "layers: deleted 1") || !strings.Contains(out, "not materializing") {
		t.Errorf("report of a collection without a materializer:\n%s", out)
	}
}
