package index

import (
	"context"
	"testing"
	"time"
)

func TestYieldToForegroundWaitsForReads(t *testing.T) {
	var r Reader
	r.foreground.begin()
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(30 * time.Millisecond)
		released <- time.Now()
		r.foreground.end()
	}()
	const quiet = 10 * time.Millisecond
	waited, err := r.YieldToForeground(context.Background(), quiet, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	end := <-released
	if since := time.Since(end); since < quiet {
		t.Errorf("returned %v after the foreground read ended, want at least the quiet time %v", since, quiet)
	}
	if waited < 30*time.Millisecond {
		t.Errorf("waited %v while a read was in flight for 30ms", waited)
	}
}

func TestYieldToForegroundIsBounded(t *testing.T) {
	var r Reader
	r.foreground.begin()
	defer r.foreground.end()
	waited, err := r.YieldToForeground(context.Background(), 0, 20*time.Millisecond)
	if err != nil || waited < 20*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("waited %v, %v; want about 20ms", waited, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.YieldToForeground(ctx, 0, time.Minute); err == nil {
		t.Fatal("cancelled context: no error")
	}
}

func TestYieldToForegroundIdle(t *testing.T) {
	var r Reader
	if waited, _ := r.YieldToForeground(context.Background(), time.Millisecond, time.Minute); waited > 100*time.Millisecond {
		t.Fatalf("idle reader made the caller wait %v", waited)
	}
	if !isBackground(Background(context.Background())) || isBackground(context.Background()) {
		t.Fatal("Background does not mark the context")
	}
}
