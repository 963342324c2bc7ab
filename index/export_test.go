package index

// WithSyncObserver returns opts with fn told about each step that makes a
// zstd copy durable ("sync", "rename", "syncdir") before it happens; an
// error from fn fails that step.
func WithSyncObserver(opts PassOptions, fn func(step, path string) error) PassOptions {
	opts.observeSync = fn
	return opts
}
