package main

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMountProbe(t *testing.T) {
	release := make(chan struct{})
	var answer error
	p := &mountProbe{path: "/mnt/x", timeout: 50 * time.Millisecond, stat: func(string) error {
		<-release
		return answer
	}}
	close(release)
	if err := p.alive(); err != nil {
		t.Fatalf("answering mount: %v", err)
	}
	answer = syscall.ENOTCONN
	if err := p.alive(); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("dead mount: %v", err)
	}

	// A stat that hangs fails the probe, and so does the next probe while
	// it still hangs, without a second stat.
	release = make(chan struct{})
	answer = nil
	if err := p.alive(); err == nil || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("hanging mount: %v", err)
	}
	if err := p.alive(); err == nil || !strings.Contains(err.Error(), "earlier stat") {
		t.Fatalf("probe while a stat hangs: %v", err)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for p.pending.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := p.alive(); err != nil {
		t.Fatalf("mount answering again: %v", err)
	}
}

func TestMountProbeRealDirectory(t *testing.T) {
	if err := newMountProbe(t.TempDir()).alive(); err != nil {
		t.Fatal(err)
	}
	if err := newMountProbe("/nonexistent/explodefs").alive(); err == nil {
		t.Fatal("a missing mountpoint answered")
	}
}
