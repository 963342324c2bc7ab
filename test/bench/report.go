package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index/badgerstore"
)

// layerBytes opens the stopped daemon's index and measures what each
// layer's records take.
func layerBytes(state string, layers []string, f *figures) error {
	store, err := badgerstore.Open(filepath.Join(state, "index"))
	if err != nil {
		return err
	}
	defer store.Close()
	for _, l := range layers {
		d := digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(l))
		e, s, w, err := store.LayerBytes(d)
		if err != nil {
			return err
		}
		f.entryBytes += e
		f.spanBytes += s
		f.windowBytes += w
	}
	return nil
}

func report(f figures) {
	gunzip := f.gunzip.Seconds()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nFIGURE\tVALUE\tGOAL\tMET")
	row := func(name, value, goal string, met bool) {
		mark := "yes"
		if !met {
			mark = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, value, goal, mark)
	}
	ttv := f.timeToView.Seconds() / gunzip
	row("time-to-view / serial gzip -dc", fmt.Sprintf("%.2f (%.2fs / %.2fs)", ttv, f.timeToView.Seconds(), gunzip), "<= 1.0", ttv <= 1.0)
	row("cold 4 KiB random read p50", f.p50.Round(10e3).String(), "<= 5ms", f.p50.Milliseconds() <= 5)
	row("cold 4 KiB random read p99", f.p99.Round(10e3).String(), "<= 20ms", f.p99.Milliseconds() <= 20)
	row("warm sequential read", fmt.Sprintf("%.2f GB/s", f.warmSeqBytesPerSec/1e9), ">= 1 GB/s", f.warmSeqBytesPerSec >= 1e9)
	full := f.fullRead.Seconds() / gunzip
	row("full read in path order / gzip -dc", fmt.Sprintf("%.2f (%.2fs, %d files)", full, f.fullRead.Seconds(), f.files), "<= 1.5", full <= 1.5)
	perEntry := float64(f.sstBytes-f.windowBytes) / float64(max(f.entries, 1))
	row("index bytes per entry (on disk)", fmt.Sprintf("%.0f B (%d entries; encoded %.0f B)", perEntry, f.entries,
		float64(f.entryBytes)/float64(max(f.entries, 1))), "<= 150 B", perEntry <= 150)
	ckpt := 100 * float64(f.windowBytes+f.spanBytes) / float64(f.tarBytes)
	row("checkpoint bytes / tar size", fmt.Sprintf("%.2f%% (%.1f MB)", ckpt, float64(f.windowBytes+f.spanBytes)/1e6), "<= 2%", ckpt <= 2)
	row("daemon peak RSS", fmt.Sprintf("%.0f MiB", float64(f.peakRSS)/(1<<20)), "reported", true)
	tw.Flush()
	fmt.Printf("\nimage: %.0f MB tar in %.0f MB gzip; full read moved %.0f MB\n", float64(f.tarBytes)/1e6, float64(f.gzipBytes)/1e6, float64(f.fullReadBytes)/1e6)
}
