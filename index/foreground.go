package index

import (
	"context"
	"sync/atomic"
	"time"
)

type backgroundKey struct{}

// Background marks reads made with the returned context as background
// work (materializing an image), which yields to the reads users wait
// for: YieldToForeground waits for those, not for these.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

func isBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}

// foregroundReads tracks reads that users wait for.
type foregroundReads struct {
	inFlight atomic.Int64
	// lastEnd is when the latest one ended, in UnixNano.
	lastEnd atomic.Int64
}

func (f *foregroundReads) begin() { f.inFlight.Add(1) }

func (f *foregroundReads) end() {
	f.lastEnd.Store(time.Now().UnixNano())
	f.inFlight.Add(-1)
}

// busy reports whether a foreground read is in flight or ended less than
// quiet ago: a reader walking a tree issues its next read right after the
// previous one, and background work slipping into that gap delays it.
func (f *foregroundReads) busy(quiet time.Duration) bool {
	return f.inFlight.Load() > 0 || time.Since(time.Unix(0, f.lastEnd.Load())) < quiet
}

// yieldPoll is how often a yielding caller looks again.
const yieldPoll = time.Millisecond

// YieldToForeground waits while foreground reads are in flight or the
// last ended less than quiet ago, but no longer than max, so that
// background work makes progress under a steady load. It returns how long
// it waited, and ctx's error if ctx ended.
func (r *Reader) YieldToForeground(ctx context.Context, quiet, max time.Duration) (time.Duration, error) {
	start := time.Now()
	for r.foreground.busy(quiet) {
		waited := time.Since(start)
		if waited >= max {
			return waited, nil
		}
		t := time.NewTimer(yieldPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return time.Since(start), ctx.Err()
		case <-t.C:
		}
	}
	return time.Since(start), ctx.Err()
}
