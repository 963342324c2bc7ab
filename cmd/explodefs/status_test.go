package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
)

func TestStatusTableRowsPerTag(t *testing.T) {
	ready := digest.FromString("ready")
	rep := status.Report{Images: []status.Image{
		{Digest: ready, Refs: []string{"ns/app:latest", "ns/app:v1"}, State: status.Ready, Files: 12,
			Materialized: &status.Materialization{State: "done", Commit: strings.Repeat("ab", 32)}},
		{Digest: digest.FromString("indexing"), Refs: []string{"ns/big:latest"}, State: status.Indexing,
			BytesDone: 45, BytesTotal: 100, Materialized: &status.Materialization{State: "pending"}},
		{Digest: digest.FromString("failed"), Refs: []string{"ns/bad:latest"}, State: status.Failed, Attempts: 2,
			Reason: "layer sha256:1234: blob does not match its digest"},
	}}
	var out bytes.Buffer
	printReport(&out, rep)
	lines := strings.Split(out.String(), "\n")
	want := [][]string{
		{"TAG", "IMAGE", "STATE", "INDEXED", "OSTREE"},
		{"ns/app:latest", short(ready.String()), "ready", "100%", "done abababababab"},
		{"ns/app:v1", short(ready.String()), "ready", "100%"},
		{"ns/bad:latest", "failed", "-", "layer sha256:1234: blob does not match its digest"},
		{"ns/big:latest", "indexing", "[####      ] 45%", "pending"},
	}
	for i, fields := range want {
		for _, f := range fields {
			if !strings.Contains(lines[i], f) {
				t.Errorf("line %d %q lacks %q", i, lines[i], f)
			}
		}
	}
	if !strings.Contains(out.String(), "failed (attempt 2): layer sha256:1234") {
		t.Errorf("the full reason is missing:\n%s", out.String())
	}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{{0, 100, "[          ] 0%"}, {100, 100, "[##########] 100%"}, {7, 0, "[          ]"}, {150, 100, "[##########] 100%"}} {
		if got := bar(tc.done, tc.total); got != tc.want {
			t.Errorf("bar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}
