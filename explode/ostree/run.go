package ostree

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// Run materializes queued images one at a time (a repository takes one
// transaction at a time), keeps refs in step with the catalog and runs
// the GCs asked of it (explode/gc schedules them), until ctx ends.
func (m *Materializer) Run(ctx context.Context) {
	m.recoverRecords(ctx)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for ctx.Err() == nil {
		if _, _, err := m.syncRefs(ctx, false); err != nil {
			m.log.Warn("cannot bring OSTree refs up to date", "repo", m.repo.Path(), "err", err)
		}
		d, view, wait := m.next()
		if view != nil {
			m.runImage(ctx, d, view)
			continue
		}
		retry.Reset(wait)
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-retry.C:
		case call := <-m.gcCalls:
			st, err := m.gc(ctx, call.dryRun)
			call.reply <- gcResult{st, err}
		}
	}
}

// recoverRecords reports what a previous run left: a materialization
// recorded as running was cut short by a crash. Either its transaction
// never committed and left no ref, or it committed whole just before the
// crash. It is redone when its image is published again, since only a
// record of a finished commit is trusted (alreadyCommitted).
func (m *Materializer) recoverRecords(ctx context.Context) {
	err := m.store.Materializations(ctx, func(d digest.Digest, rec index.Materialization) error {
		if rec.State == index.MaterialRunning {
			m.log.Info("materialization was interrupted; it will be redone", "image", d, "since", rec.Updated)
		}
		return nil
	})
	if err != nil {
		m.log.Warn("cannot read materialization records", "err", err)
	}
}

// next returns the first queued image that is due, or how long to wait
// for one.
func (m *Materializer) next() (digest.Digest, *index.View, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	wait := time.Hour
	now := time.Now()
	for i, d := range m.queue {
		img := m.images[d]
		if until := img.retryAt.Sub(now); until > 0 {
			wait = min(wait, until)
			continue
		}
		m.queue = append(m.queue[:i:i], m.queue[i+1:]...)
		img.queued = false
		img.state = index.MaterialRunning
		return d, img.view, 0
	}
	return "", nil, wait
}

// runImage materializes one image and records the outcome.
func (m *Materializer) runImage(ctx context.Context, d digest.Digest, view *index.View) {
	started := time.Now()
	if commit, ok := m.alreadyCommitted(ctx, d); ok {
		m.finish(ctx, d, commit, status.Materialization{Started: started}, nil)
		return
	}
	m.record(ctx, d, index.Materialization{State: index.MaterialRunning})
	m.status.SetMaterialization(d, status.Materialization{State: string(index.MaterialRunning), Started: started})
	commit, c, err := m.commitImage(ctx, d, view, started)
	if ctx.Err() != nil && err != nil {
		// Shutting down: the record stays running, and the next run
		// redoes the image.
		return
	}
	if m.opts.Commits != nil {
		m.opts.Commits.ObserveCommit(time.Since(started), err)
	}
	if err == nil {
		attrs := append([]any{"image", d, "commit", commit, "took", time.Since(started).Round(time.Millisecond)}, c.stats.logAttrs()...)
		m.log.Info("image materialized", attrs...)
	}
	// c is garbage once its progress is taken.
	m.finish(ctx, d, commit, c.progress(""), err)
	if view.Len() >= bigImage {
		// A commit of a big image leaves hundreds of MiB of garbage
		// (per-file lists of tens of bytes each); give it back now
		// rather than whenever the runtime's scavenger gets to it.
		debug.FreeOSMemory()
	}
}

// bigImage is the number of inodes from which a commit's memory is handed
// back to the system at once.
const bigImage = 100_000

// alreadyCommitted reports an image whose recorded commit its ref still
// names, as after a restart.
func (m *Materializer) alreadyCommitted(ctx context.Context, d digest.Digest) (libostree.Checksum, bool) {
	rec, err := m.store.Materialization(ctx, d)
	if err != nil || rec.State != index.MaterialDone {
		return libostree.Checksum{}, false
	}
	commit, err := libostree.ParseChecksum(rec.Commit)
	if err != nil {
		return libostree.Checksum{}, false
	}
	got, ok, err := m.repo.Resolve(ImageRef(d))
	return commit, err == nil && ok && got == commit
}

// finish records the outcome; progress carries the counts and start time
// for the status.
func (m *Materializer) finish(ctx context.Context, d digest.Digest, commit libostree.Checksum, progress status.Materialization, err error) {
	rec := index.Materialization{State: index.MaterialDone, Commit: commit.String()}
	if err != nil {
		rec = index.Materialization{State: index.MaterialFailed, Reason: err.Error()}
		m.log.Error("cannot materialize image", "image", d, "err", err)
	}
	m.record(ctx, d, rec)
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.images[d]
	if !ok {
		return // dropped meanwhile; syncRefs deletes its ref
	}
	img.state, img.reason = rec.State, rec.Reason
	if err == nil {
		img.commit, img.fails = commit, 0
	} else {
		img.fails++
		img.retryAt = time.Now().Add(backoff(m.opts.RetryBackoff, m.opts.RetryMax, img.fails))
		m.enqueue(d, img)
	}
	st := img.statusOf()
	st.FilesDone, st.FilesTotal, st.BytesDone, st.BytesTotal = progress.FilesDone, progress.FilesTotal, progress.BytesDone, progress.BytesTotal
	st.Started, st.Finished = progress.Started, time.Now()
	m.status.SetMaterialization(d, st)
}

func backoff(first, limit time.Duration, fails int) time.Duration {
	wait := first
	for i := 1; i < fails && wait < limit; i++ {
		wait *= 2
	}
	return min(wait, limit)
}

// record writes an image's materialization to the index. A failure to
// write it is logged: the repository's refs stay the truth, and the record
// is written again with the next change.
func (m *Materializer) record(ctx context.Context, d digest.Digest, rec index.Materialization) {
	rec.Updated = time.Now()
	if err := m.store.PutMaterialization(context.WithoutCancel(ctx), d, rec); err != nil {
		m.log.Warn("cannot record materialization state", "image", d, "state", rec.State, "err", err)
	}
}

// syncRefs points every tag ref and image ref at the commit of the image
// it shows, and deletes refs of images and tags that the sources no
// longer name. It returns the refs it deleted and the commits every ref
// left names. A dry run changes nothing and returns what it would have.
func (m *Materializer) syncRefs(ctx context.Context, dryRun bool) (deleted []string, kept []libostree.Checksum, err error) {
	m.mu.Lock()
	want := map[string]libostree.Checksum{}
	for d, img := range m.images {
		if img.state == index.MaterialDone {
			want[ImageRef(d)] = img.commit
		}
	}
	for _, st := range m.streams {
		for tag, d := range st.tags {
			if img, ok := m.images[d]; ok && img.state == index.MaterialDone {
				want[TagRef(st.namespace, st.name, tag)] = img.commit
			}
		}
	}
	wants := m.wants
	m.mu.Unlock()

	have, err := m.repo.ListRefs("explodefs")
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for ref, commit := range want {
		kept = append(kept, commit)
		if got, ok := have[ref]; (!ok || got != commit) && !dryRun {
			errs = append(errs, m.repo.SetRef(ref, commit))
		}
	}
	for ref, commit := range have {
		if _, ok := want[ref]; ok {
			continue
		}
		if wants == nil || !wants.Ready() || ctx.Err() != nil || !m.unwanted(wants, ref) {
			kept = append(kept, commit)
			continue
		}
		deleted = append(deleted, ref)
		if !dryRun {
			m.log.Info("deleting ref of an image or tag the sources no longer name", "ref", ref)
			errs = append(errs, m.repo.DeleteRef(ref))
		}
	}
	slices.Sort(deleted)
	return deleted, kept, errors.Join(errs...)
}

// unwanted reports whether ref names an image or tag that no source names.
// Refs of other shapes under explodefs/ are left alone.
func (m *Materializer) unwanted(wants Wants, ref string) bool {
	if hex, ok := strings.CutPrefix(ref, ImageRefPrefix); ok {
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		return d.Validate() == nil && !wants.WantsImage(d)
	}
	if ns, stream, tag, ok := parseTagRef(ref); ok {
		return !wants.WantsTag(ns, stream, tag)
	}
	return false
}

// GCStats says what a GC did, or would do.
type GCStats struct {
	// PruneStats counts the objects the repository holds and those
	// pruned, with their bytes.
	libostree.PruneStats
	// Refs lists the refs deleted, of images and tags no source names.
	Refs []string `json:",omitempty"`
	// Records counts materialization records of images no source names
	// any more, deleted from the index.
	Records int
}

type gcCall struct {
	dryRun bool
	reply  chan gcResult
}

type gcResult struct {
	stats GCStats
	err   error
}

// GC deletes the refs and records of images and tags the sources no
// longer name and prunes objects no ref reaches; a dry run deletes
// nothing and says what would go. It runs on the worker, between images,
// and waits for it.
func (m *Materializer) GC(ctx context.Context, dryRun bool) (GCStats, error) {
	call := gcCall{dryRun: dryRun, reply: make(chan gcResult, 1)}
	select {
	case m.gcCalls <- call:
	case <-ctx.Done():
		return GCStats{}, ctx.Err()
	}
	select {
	case r := <-call.reply:
		return r.stats, r.err
	case <-ctx.Done():
		return GCStats{}, ctx.Err()
	}
}

func (m *Materializer) gc(ctx context.Context, dryRun bool) (GCStats, error) {
	var st GCStats
	deleted, kept, err := m.syncRefs(ctx, dryRun)
	st.Refs = deleted
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	m.mu.Lock()
	wants := m.wants
	m.mu.Unlock()
	if wants != nil && wants.Ready() {
		var gone []digest.Digest
		err := m.store.Materializations(ctx, func(d digest.Digest, _ index.Materialization) error {
			if !wants.WantsImage(d) {
				gone = append(gone, d)
			}
			return nil
		})
		if err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		for _, d := range gone {
			if !dryRun {
				if err := m.store.DeleteMaterialization(ctx, d); err != nil {
					return st, fmt.Errorf("gc: %w", err)
				}
			}
			st.Records++
		}
	}
	if dryRun {
		keep := make([]string, len(kept))
		for i, c := range kept {
			keep[i] = c.String()
		}
		st.PruneStats, err = m.repo.PruneEstimate(keep)
		if err != nil {
			return st, fmt.Errorf("gc: %w", err)
		}
		return st, nil
	}
	pruned, err := m.repo.Prune()
	st.PruneStats = pruned
	if err != nil {
		return st, fmt.Errorf("gc: %w", err)
	}
	if pruned.Pruned > 0 {
		// Forget verifications of objects that may be gone, so that the
		// set does not grow with every image ever opened.
		m.verifiedMu.Lock()
		clear(m.verified)
		m.verifiedMu.Unlock()
	}
	m.log.Info("pruned OSTree repo", "repo", m.repo.Path(), "objects", pruned.Objects, "pruned", pruned.Pruned,
		"bytes", pruned.Bytes, "records", st.Records, "refs", len(st.Refs))
	return st, nil
}
