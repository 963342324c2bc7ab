package main

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// mountProbe answers /healthz: the daemon is alive while a stat of its
// mount's root returns, without error, within timeout. A stat that hangs
// (a wedged FUSE server) is left to finish in the background; until it
// does, the probe fails without starting another, so probes never pile up.
type mountProbe struct {
	path    string
	timeout time.Duration
	stat    func(path string) error
	pending atomic.Bool
}

func newMountProbe(path string) *mountProbe {
	return &mountProbe{path: path, timeout: 5 * time.Second, stat: func(p string) error {
		_, err := os.Stat(p)
		return err
	}}
}

func (p *mountProbe) alive() error {
	if !p.pending.CompareAndSwap(false, true) {
		return fmt.Errorf("the mount at %s has not answered an earlier stat yet", p.path)
	}
	done := make(chan error, 1)
	go func() {
		err := p.stat(p.path)
		// Cleared before the answer, so the next probe may stat again.
		p.pending.Store(false)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("the mount at %s does not answer: %w", p.path, err)
		}
		return nil
	case <-time.After(p.timeout):
		return fmt.Errorf("the mount at %s did not answer within %v", p.path, p.timeout)
	}
}
