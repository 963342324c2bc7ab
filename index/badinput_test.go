package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

func wantLayerError(t *testing.T, err error, layer digest.Digest, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("pass succeeded; want it to fail")
	}
	msg := err.Error()
	for _, w := range append(words, layer.String()) {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not mention %q", msg, w)
		}
	}
}

func TestPassRefusesDigestMismatch(t *testing.T) {
	store := memstore.New()
	layer := compress(t, gzipOne, buildTar(t, sampleLayer()))
	wrong := digest.FromString("something else")
	_, err := index.IndexLayer(context.Background(), store, indextest.MemBlob(layer), wrong, index.PassOptions{})
	wantLayerError(t, err, wrong, "does not match its digest")
	if !errors.Is(err, index.ErrDigestMismatch) {
		t.Errorf("error %v is not ErrDigestMismatch", err)
	}
	if _, err := store.Layer(context.Background(), wrong); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("failed layer is visible: %v", err)
	}
}

func TestPassRefusesTruncatedGzip(t *testing.T) {
	layer := compress(t, gzipOne, buildTar(t, sampleLayer()))
	cut := layer[:len(layer)/2]
	d, _, err := indexBytes(t, memstore.New(), cut, index.PassOptions{})
	wantLayerError(t, err, d)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("truncation error: %v", err)
	}
}

func TestPassRefusesLyingTarSize(t *testing.T) {
	raw := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("fine")},
		{hdr: tar.Header{Name: "liar", Typeflag: tar.TypeReg, Mode: 0o644}, data: bytes.Repeat([]byte("x"), 600)},
	})
	// Claim 10000 bytes for "liar" and cut the archive after its data.
	var h tar.Header
	h.Name, h.Typeflag, h.Mode, h.Size = "liar", tar.TypeReg, 0o644, 10000
	var hb bytes.Buffer
	tw := tar.NewWriter(&hb)
	tw.WriteHeader(&h)
	hdrBlock := hb.Bytes()[:512]
	liarAt := bytes.Index(raw, []byte("liar\x00"))
	lying := append(bytes.Clone(raw[:liarAt]), hdrBlock...)
	lying = append(lying, bytes.Repeat([]byte("x"), 1024)...)
	d, _, err := indexBytes(t, memstore.New(), lying, index.PassOptions{})
	wantLayerError(t, err, d, `"liar"`)
}

func TestPassRefusesEscapingNames(t *testing.T) {
	for _, name := range []string{"../../etc/evil", "a/../../b", "./../x"} {
		raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("evil")}})
		d, _, err := indexBytes(t, memstore.New(), raw, index.PassOptions{})
		wantLayerError(t, err, d, name, "escapes the image root")
	}
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "link", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}})
	d, _, err := indexBytes(t, memstore.New(), raw, index.PassOptions{})
	wantLayerError(t, err, d, "link", "escapes the image root")
}

func TestCleanEntryPath(t *testing.T) {
	for in, want := range map[string]string{
		"./etc/hosts": "etc/hosts", "/abs/x": "abs/x", "a/./b//c/": "a/b/c", "a/b/../c": "a/c", "./": "", ".": "",
	} {
		got, err := index.CleanEntryPath(in)
		if err != nil || got != want {
			t.Errorf("CleanEntryPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../x", "x\x00y", strings.Repeat("n", 256)} {
		if got, err := index.CleanEntryPath(in); err == nil {
			t.Errorf("CleanEntryPath(%q) = %q; want an error", in, got)
		}
	}
}
