package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
)

func xattrFile(name string, records map[string]string) tarFile {
	return tarFile{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX, PAXRecords: records}, data: []byte("x")}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Names the kernel could not hold, or that would read back as other names,
// fail the layer with an error naming the entry.
func TestPassRefusesBadXattrs(t *testing.T) {
	manyNames := map[string]string{}
	for i := range 300 {
		manyNames[fmt.Sprintf("SCHILY.xattr.user.%0250d", i)] = "" // 300 × 256 bytes of names
	}
	bigValues := map[string]string{}
	for i := range 5 {
		bigValues[fmt.Sprintf("SCHILY.xattr.user.big%d", i)] = strings.Repeat("v", 60<<10)
	}
	for name, records := range map[string]map[string]string{
		"empty SCHILY name":     {"SCHILY.xattr.": "v"},
		"empty LIBARCHIVE name": {"LIBARCHIVE.xattr.": b64("v")},
		"NUL in the name":       {"LIBARCHIVE.xattr.user.a%00security.capability": b64("\x01\x00\x00\x02")},
		"no namespace":          {"SCHILY.xattr.capability": "v"},
		"unknown namespace":     {"SCHILY.xattr.os2.x": "v"},
		"namespace alone":       {"SCHILY.xattr.user.": "v"},
		"bad escape":            {"LIBARCHIVE.xattr.user.%zz": b64("v")},
		"bad base64":            {"LIBARCHIVE.xattr.user.x": "not base64!"},
		"name too long":         {"SCHILY.xattr.user." + strings.Repeat("n", 251): "v"},
		"value too long":        {"SCHILY.xattr.user.big": strings.Repeat("v", 64<<10+1)},
		"name list too long":    manyNames,
		"entry too large":       bigValues,
		"two LIBARCHIVE names":  {"LIBARCHIVE.xattr.user.a": b64("1"), "LIBARCHIVE.xattr.user.%61": b64("2")},
	} {
		t.Run(name, func(t *testing.T) {
			raw := buildTar(t, []tarFile{
				{hdr: tar.Header{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("fine")},
				xattrFile("victim", records),
			})
			d, _, err := indexBytes(t, memstore.New(), raw, index.PassOptions{})
			wantLayerError(t, err, d, `"victim"`, "extended attribute")
			var ee *index.EntryError
			if !errors.As(err, &ee) || ee.Path != "victim" {
				t.Errorf("error %v is not an EntryError about victim", err)
			}
		})
	}
}

// What is right today stays: an empty value is an attribute of 0 bytes,
// every namespace the kernel knows is accepted, libarchive's escaping is
// undone (a '+' is a plus), and the attribute both encodings name is shown
// once, with the SCHILY value that archive/tar and umoci see.
func TestPassKeepsGoodXattrs(t *testing.T) {
	raw := buildTar(t, []tarFile{xattrFile("f", map[string]string{
		"SCHILY.xattr.user.empty":                       "",
		"SCHILY.xattr.trusted.t":                        "t",
		"SCHILY.xattr.security.capability":              "\x01\x00\x00\x02",
		"SCHILY.xattr.system.posix_acl_access":          "\x02\x00\x00\x00",
		"LIBARCHIVE.xattr.user.a+b%20c":                 b64("plus"),
		"LIBARCHIVE.xattr.user.both":                    b64("libarchive"),
		"SCHILY.xattr.user.both":                        "schily",
		"LIBARCHIVE.xattr.user.bin%3Dary":               b64("\x00\xff"),
		"SCHILY.xattr.user." + strings.Repeat("n", 250): strings.Repeat("v", 64<<10),
	})})
	store := memstore.New()
	d, _, err := indexBytes(t, store, raw, index.PassOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []index.Xattr
	if err := store.Entries(context.Background(), d, func(e index.Entry) error { got = e.Xattrs; return nil }); err != nil {
		t.Fatal(err)
	}
	want := []index.Xattr{
		{Name: "security.capability", Value: []byte("\x01\x00\x00\x02")},
		{Name: "system.posix_acl_access", Value: []byte("\x02\x00\x00\x00")},
		{Name: "trusted.t", Value: []byte("t")},
		{Name: "user.a+b c", Value: []byte("plus")},
		{Name: "user.bin=ary", Value: []byte("\x00\xff")},
		{Name: "user.both", Value: []byte("schily")},
		{Name: "user.empty", Value: []byte{}},
		{Name: "user." + strings.Repeat("n", 250), Value: bytes.Repeat([]byte("v"), 64<<10)},
	}
	if len(got) != len(want) {
		t.Fatalf("xattrs %q, want %q", names(got), names(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("xattr %d = %q (%d bytes), want %q (%d bytes)", i, got[i].Name, len(got[i].Value), want[i].Name, len(want[i].Value))
		}
	}
}

func names(xs []index.Xattr) []string {
	var out []string
	for _, x := range xs {
		out = append(out, x.Name)
	}
	return out
}

// xattrBomb is a layer of n files, each with a value of size bytes; the
// values repeat, so the blob stays small while the xattrs do not.
func xattrBomb(t *testing.T, n, size int) []byte {
	files := make([]tarFile, n)
	value := strings.Repeat("bomb", size/4)
	for i := range files {
		files[i] = xattrFile(fmt.Sprintf("f%04d", i), map[string]string{"SCHILY.xattr.user.v": value})
	}
	return compress(t, gzipOne, buildTar(t, files))
}

// A layer's xattrs are bounded in all, so a small blob cannot make every
// view that shows it hold hundreds of MiB.
func TestPassBoundsLayerXattrs(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		// 300 values of 60 KiB: each within the kernel's limits, 17.6 MiB
		// in all, from a blob of a few hundred KiB.
		blob := xattrBomb(t, 300, 60<<10)
		if len(blob) > 1<<20 {
			t.Fatalf("the bomb's blob is %d bytes; meant to be small", len(blob))
		}
		d, _, err := indexBytes(t, memstore.New(), blob, index.PassOptions{})
		wantLayerError(t, err, d, "extended attributes exceed", fmt.Sprint(index.DefaultMaxLayerXattrBytes))
		var ee *index.EntryError
		if !errors.As(err, &ee) {
			t.Errorf("error %v names no entry", err)
		}
	})
	t.Run("configured", func(t *testing.T) {
		blob := xattrBomb(t, 3, 40_000)
		d, _, err := indexBytes(t, memstore.New(), blob, index.PassOptions{MaxLayerXattrBytes: 100_000})
		wantLayerError(t, err, d, `"f0002"`, "exceed 100000")
		if _, _, err := indexBytes(t, memstore.New(), blob, index.PassOptions{MaxLayerXattrBytes: 200_000}); err != nil {
			t.Errorf("within the bound: %v", err)
		}
	})
}
