package indextest

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// ImageDigest returns a distinct, valid image digest for n.
func ImageDigest(n int) digest.Digest {
	return digest.FromString(fmt.Sprintf("image-%d", n))
}

// ObjectID returns a distinct object ID for seed.
func ObjectID(seed string) index.ObjectID { return sha256.Sum256([]byte(seed)) }

func putObjects(t *testing.T, s index.Store, d digest.Digest, objs []index.ContentObject) {
	t.Helper()
	if err := s.PutContentObjects(context.Background(), d, objs); err != nil {
		t.Fatalf("PutContentObjects(%s, %d objects): %v", d, len(objs), err)
	}
}

func readObjects(t *testing.T, s index.Store, d digest.Digest) []index.ContentObject {
	t.Helper()
	var got []index.ContentObject
	if err := s.ContentObjects(context.Background(), d, func(o index.ContentObject) error {
		got = append(got, o)
		return nil
	}); err != nil {
		t.Fatalf("ContentObjects(%s): %v", d, err)
	}
	return got
}

func sortObjects(objs []index.ContentObject) []index.ContentObject {
	out := slices.Clone(objs)
	slices.SortFunc(out, func(a, b index.ContentObject) int {
		return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Meta, b.Meta))
	})
	return out
}

func wantObject(t *testing.T, s index.Store, d digest.Digest, offset int64, meta uint64, want index.ObjectID) {
	t.Helper()
	got, err := s.ContentObject(context.Background(), d, offset, meta)
	if err != nil {
		t.Fatalf("ContentObject(%s, %d, %#x): %v", d, offset, meta, err)
	}
	if got != want {
		t.Errorf("ContentObject(%s, %d, %#x) = %x, want %x", d, offset, meta, got[:4], want[:4])
	}
}

func wantNoObject(t *testing.T, s index.Store, d digest.Digest, offset int64, meta uint64) {
	t.Helper()
	if id, err := s.ContentObject(context.Background(), d, offset, meta); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("ContentObject(%s, %d, %#x) = %x, %v; want ErrNotFound", d, offset, meta, id[:4], err)
	}
}

// Offsets and metas chosen so that a little-endian or signed encoding of
// either would scan out of order.
func testContentObjectsRoundTrip(t *testing.T, s index.Store) {
	d := LayerDigest(20)
	offsets := []int64{math.MaxInt64, 1 << 40, 1<<32 + 7, 65536, 256, 255, 1, 0}
	metas := []uint64{math.MaxUint64, 1 << 63, 0x0100, 1, 0}
	var objs []index.ContentObject
	for _, off := range offsets {
		for _, meta := range metas {
			objs = append(objs, index.ContentObject{Offset: off, Meta: meta, ID: ObjectID(fmt.Sprint(off, meta))})
		}
	}
	putObjects(t, s, d, objs)
	want := sortObjects(objs)
	if got := readObjects(t, s, d); !reflect.DeepEqual(got, want) {
		t.Fatalf("ContentObjects: %d objects, not those put in (Offset, Meta) order:\n got %v\nwant %v", len(got), got, want)
	}
	for _, o := range objs {
		wantObject(t, s, d, o.Offset, o.Meta, o.ID)
	}
}

func testContentObjectsReplace(t *testing.T, s index.Store) {
	d := LayerDigest(21)
	a, b, c := ObjectID("a"), ObjectID("b"), ObjectID("c")
	putObjects(t, s, d, []index.ContentObject{{Offset: 10, Meta: 1, ID: a}, {Offset: 10, Meta: 2, ID: b}})
	putObjects(t, s, d, []index.ContentObject{{Offset: 10, Meta: 1, ID: c}})
	// Within one call, the later of two objects for an entry wins.
	putObjects(t, s, d, []index.ContentObject{{Offset: 20, Meta: 0, ID: a}, {Offset: 20, Meta: 0, ID: b}})
	want := []index.ContentObject{{Offset: 10, Meta: 1, ID: c}, {Offset: 10, Meta: 2, ID: b}, {Offset: 20, Meta: 0, ID: b}}
	if got := readObjects(t, s, d); !reflect.DeepEqual(got, want) {
		t.Errorf("after replacing:\n got %v\nwant %v", got, want)
	}
	wantObject(t, s, d, 10, 1, c)
	wantObject(t, s, d, 20, 0, b)
}

func testContentObjectsLayersApart(t *testing.T, s index.Store) {
	x, y := LayerDigest(22), LayerDigest(23)
	var ox, oy []index.ContentObject
	for i := range 20 {
		ox = append(ox, index.ContentObject{Offset: int64(i) * 512, Meta: 7, ID: ObjectID(fmt.Sprint("x", i))})
		oy = append(oy, index.ContentObject{Offset: int64(i) * 512, Meta: 7, ID: ObjectID(fmt.Sprint("y", i))})
	}
	oy = oy[:15]
	putObjects(t, s, x, ox)
	putObjects(t, s, y, oy)
	if got := readObjects(t, s, x); !reflect.DeepEqual(got, ox) {
		t.Errorf("layer x: %d objects, want its own %d", len(got), len(ox))
	}
	if got := readObjects(t, s, y); !reflect.DeepEqual(got, oy) {
		t.Errorf("layer y: %d objects, want its own %d", len(got), len(oy))
	}
	wantObject(t, s, x, 512, 7, ox[1].ID)
	wantObject(t, s, y, 512, 7, oy[1].ID)
	wantNoObject(t, s, y, 19*512, 7)
}

func testContentObjectNotFound(t *testing.T, s index.Store) {
	d := LayerDigest(24)
	if got := readObjects(t, s, d); len(got) != 0 {
		t.Errorf("layer with no objects yielded %d", len(got))
	}
	wantNoObject(t, s, d, 0, 0)
	putObjects(t, s, d, []index.ContentObject{{Offset: 4096, Meta: 3, ID: ObjectID("x")}})
	wantNoObject(t, s, d, 4096, 4)
	wantNoObject(t, s, d, 4097, 3)
	wantNoObject(t, s, d, -1, 3)
	wantNoObject(t, s, LayerDigest(25), 4096, 3)
	wantObject(t, s, d, 4096, 3, ObjectID("x"))
}

// A negative offset cannot be an entry's, and would scan out of order in
// a store that encodes offsets unsigned; the whole call is refused.
func testContentObjectsNegativeOffset(t *testing.T, s index.Store) {
	d := LayerDigest(26)
	err := s.PutContentObjects(context.Background(), d, []index.ContentObject{
		{Offset: 0, Meta: 0, ID: ObjectID("a")}, {Offset: -512, Meta: 0, ID: ObjectID("b")}})
	if err == nil {
		t.Fatal("PutContentObjects accepted a negative offset")
	}
	if got := readObjects(t, s, d); len(got) != 0 {
		t.Errorf("refused call recorded %v", got)
	}
}

func testContentObjectsNotAliased(t *testing.T, s index.Store) {
	d := LayerDigest(27)
	objs := []index.ContentObject{{Offset: 0, Meta: 1, ID: ObjectID("a")}}
	putObjects(t, s, d, objs)
	objs[0].ID[0] ^= 0xff
	objs[0].Offset = 99
	wantObject(t, s, d, 0, 1, ObjectID("a"))
	got := readObjects(t, s, d)
	got[0].ID[1] ^= 0xff
	wantObject(t, s, d, 0, 1, ObjectID("a"))
}

// Tens of thousands of objects in one call are more than one Badger
// transaction takes.
func testManyContentObjects(t *testing.T, s index.Store) {
	d := LayerDigest(28)
	const n = 60000
	objs := make([]index.ContentObject, n)
	for i := range objs {
		// Put in descending order, so that a store returning them as put
		// fails.
		j := n - 1 - i
		objs[i] = index.ContentObject{Offset: int64(j) * 1536, Meta: uint64(j % 5), ID: ObjectID(fmt.Sprint(j))}
	}
	putObjects(t, s, d, objs)
	got := readObjects(t, s, d)
	if len(got) != n {
		t.Fatalf("%d objects, want %d", len(got), n)
	}
	for i, o := range got {
		want := objs[n-1-i]
		if o != want {
			t.Fatalf("object %d = {%d %d %x}, want {%d %d %x}", i, o.Offset, o.Meta, o.ID[:4], want.Offset, want.Meta, want.ID[:4])
		}
	}
	wantObject(t, s, d, 0, 0, ObjectID("0"))
	wantObject(t, s, d, (n-1)*1536, (n-1)%5, ObjectID(fmt.Sprint(n-1)))
}

func testDeleteLayerDropsContentObjects(t *testing.T, s index.Store) {
	ctx := context.Background()
	keep, gone, bare := LayerDigest(29), LayerDigest(30), LayerDigest(31)
	objs := []index.ContentObject{{Offset: 0, Meta: 1, ID: ObjectID("a")}, {Offset: 512, Meta: 1, ID: ObjectID("b")}}
	for _, d := range []digest.Digest{keep, gone} {
		write(t, s, d, SampleEntries(4), SampleSpans(2))
		putObjects(t, s, d, objs)
	}
	// Objects of a layer with no completed pass go too.
	putObjects(t, s, bare, objs)
	for _, d := range []digest.Digest{gone, bare} {
		if err := s.DeleteLayer(ctx, d); err != nil {
			t.Fatal(err)
		}
		if got := readObjects(t, s, d); len(got) != 0 {
			t.Errorf("deleted layer %s kept %d content objects", d, len(got))
		}
		wantNoObject(t, s, d, 0, 1)
	}
	if got := readObjects(t, s, keep); !reflect.DeepEqual(got, objs) {
		t.Errorf("other layer's objects: got %v, want %v", got, objs)
	}
}

func testReindexDropsContentObjects(t *testing.T, s index.Store) {
	ctx := context.Background()
	indexed, bare, other := LayerDigest(32), LayerDigest(33), LayerDigest(34)
	objs := []index.ContentObject{{Offset: 0, Meta: 1, ID: ObjectID("a")}, {Offset: 512, Meta: 1, ID: ObjectID("b")}}
	write(t, s, indexed, SampleEntries(4), SampleSpans(2))
	putObjects(t, s, indexed, objs)
	putObjects(t, s, other, objs)
	write(t, s, indexed, SampleEntries(3), SampleSpans(1))
	if got := readObjects(t, s, indexed); len(got) != 0 {
		t.Errorf("re-indexed layer kept %d content objects of the earlier pass", len(got))
	}
	wantNoObject(t, s, indexed, 512, 1)

	// Objects left for a layer whose pass never completed are discarded
	// when the next pass starts, like its other records.
	putObjects(t, s, bare, objs)
	w, err := s.NewLayerWriter(ctx, bare)
	if err != nil {
		t.Fatal(err)
	}
	if got := readObjects(t, s, bare); len(got) != 0 {
		t.Errorf("layer being indexed again kept %d content objects", len(got))
	}
	_ = w.Abort()
	if got := readObjects(t, s, other); !reflect.DeepEqual(got, objs) {
		t.Errorf("other layer's objects: got %v, want %v", got, objs)
	}
}

func testContentObjectsCallbackError(t *testing.T, s index.Store) {
	d := LayerDigest(35)
	objs := make([]index.ContentObject, 100)
	for i := range objs {
		objs[i] = index.ContentObject{Offset: int64(i), ID: ObjectID(fmt.Sprint(i))}
	}
	putObjects(t, s, d, objs)
	stop := errors.New("stop")
	var seen []int64
	err := s.ContentObjects(context.Background(), d, func(o index.ContentObject) error {
		seen = append(seen, o.Offset)
		if len(seen) == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || !reflect.DeepEqual(seen, []int64{0, 1, 2}) {
		t.Errorf("ContentObjects: err %v after offsets %v, want the callback's error after 0, 1, 2", err, seen)
	}
}

func testContentObjectsCancelled(t *testing.T, s index.Store) {
	d := LayerDigest(36)
	objs := make([]index.ContentObject, 5000)
	for i := range objs {
		objs[i] = index.ContentObject{Offset: int64(i), ID: ObjectID(fmt.Sprint(i))}
	}
	putObjects(t, s, d, objs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := s.ContentObjects(ctx, d, func(index.ContentObject) error { calls++; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ContentObjects with cancelled context: %v after %d calls, want context.Canceled", err, calls)
	}
}

func materialization(t *testing.T, s index.Store, image digest.Digest) index.Materialization {
	t.Helper()
	m, err := s.Materialization(context.Background(), image)
	if err != nil {
		t.Fatalf("Materialization(%s): %v", image, err)
	}
	return m
}

func putMaterialization(t *testing.T, s index.Store, image digest.Digest, m index.Materialization) {
	t.Helper()
	if err := s.PutMaterialization(context.Background(), image, m); err != nil {
		t.Fatalf("PutMaterialization(%s): %v", image, err)
	}
}

func sameMaterialization(a, b index.Materialization) bool {
	return a.State == b.State && a.Commit == b.Commit && a.Reason == b.Reason && a.Updated.Equal(b.Updated)
}

func testMaterializationRoundTrip(t *testing.T, s index.Store) {
	img, other := ImageDigest(1), ImageDigest(2)
	if _, err := s.Materialization(context.Background(), img); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("Materialization before any put: %v, want ErrNotFound", err)
	}
	running := index.Materialization{State: index.MaterialRunning,
		Updated: time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.FixedZone("east", 5*3600))}
	putMaterialization(t, s, img, running)
	if got := materialization(t, s, img); !sameMaterialization(got, running) {
		t.Errorf("Materialization = %+v, want %+v", got, running)
	}
	done := index.Materialization{State: index.MaterialDone, Commit: fmt.Sprintf("%x", ObjectID("commit")),
		Updated: time.Now()}
	putMaterialization(t, s, img, done)
	failed := index.Materialization{State: index.MaterialFailed, Reason: "writing object: disk full",
		Updated: time.Date(2024, 12, 31, 23, 59, 59, 1, time.UTC)}
	putMaterialization(t, s, other, failed)
	if got := materialization(t, s, img); !sameMaterialization(got, done) {
		t.Errorf("after overwrite: Materialization = %+v, want %+v", got, done)
	}
	if got := materialization(t, s, other); !sameMaterialization(got, failed) {
		t.Errorf("other image: Materialization = %+v, want %+v", got, failed)
	}
}

func testMaterializationDelete(t *testing.T, s index.Store) {
	ctx := context.Background()
	img, other := ImageDigest(3), ImageDigest(4)
	m := index.Materialization{State: index.MaterialPending, Updated: time.Unix(1700000000, 5)}
	putMaterialization(t, s, img, m)
	putMaterialization(t, s, other, m)
	if err := s.DeleteMaterialization(ctx, img); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Materialization(ctx, img); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("Materialization after delete = %+v, %v; want ErrNotFound", got, err)
	}
	if err := s.DeleteMaterialization(ctx, img); err != nil {
		t.Errorf("deleting again: %v", err)
	}
	if err := s.DeleteMaterialization(ctx, ImageDigest(5)); err != nil {
		t.Errorf("deleting one never recorded: %v", err)
	}
	if got := materialization(t, s, other); !sameMaterialization(got, m) {
		t.Errorf("other image after delete: %+v, want %+v", got, m)
	}
}

type imageRecord struct {
	image digest.Digest
	m     index.Materialization
}

func readMaterializations(t *testing.T, s index.Store) []imageRecord {
	t.Helper()
	var got []imageRecord
	if err := s.Materializations(context.Background(), func(image digest.Digest, m index.Materialization) error {
		got = append(got, imageRecord{image, m})
		return nil
	}); err != nil {
		t.Fatalf("Materializations: %v", err)
	}
	return got
}

func testMaterializationsOrder(t *testing.T, s index.Store) {
	if got := readMaterializations(t, s); len(got) != 0 {
		t.Fatalf("empty store yielded %d materializations", len(got))
	}
	states := []index.MaterialState{index.MaterialPending, index.MaterialRunning, index.MaterialDone, index.MaterialFailed}
	var want []imageRecord
	for i := range 12 {
		m := index.Materialization{State: states[i%len(states)], Commit: fmt.Sprint("c", i),
			Reason: fmt.Sprint("r", i), Updated: time.Unix(1700000000+int64(i), int64(i))}
		putMaterialization(t, s, ImageDigest(100+i), m)
		want = append(want, imageRecord{ImageDigest(100 + i), m})
	}
	if err := s.DeleteMaterialization(context.Background(), ImageDigest(105)); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(r imageRecord) bool { return r.image == ImageDigest(105) })
	slices.SortFunc(want, func(a, b imageRecord) int { return cmp.Compare(a.image, b.image) })
	if slices.IsSortedFunc(want, func(a, b imageRecord) int { return cmp.Compare(a.m.Updated.Unix(), b.m.Updated.Unix()) }) {
		t.Fatal("test digests happen to sort in insertion order; the test would not see an unsorted scan")
	}
	got := readMaterializations(t, s)
	if len(got) != len(want) {
		t.Fatalf("Materializations yielded %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].image != want[i].image || !sameMaterialization(got[i].m, want[i].m) {
			t.Errorf("materialization %d = %s %+v, want %s %+v", i, got[i].image, got[i].m, want[i].image, want[i].m)
		}
	}
}

func testMaterializationsCallbackError(t *testing.T, s index.Store) {
	m := index.Materialization{State: index.MaterialDone, Updated: time.Unix(1700000000, 0)}
	for i := range 10 {
		putMaterialization(t, s, ImageDigest(200+i), m)
	}
	stop := errors.New("stop")
	calls := 0
	err := s.Materializations(context.Background(), func(digest.Digest, index.Materialization) error {
		if calls++; calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("Materializations: err %v after %d calls, want the callback's error after 3", err, calls)
	}
}

func testMaterializationsCancelled(t *testing.T, s index.Store) {
	m := index.Materialization{State: index.MaterialDone, Updated: time.Unix(1700000000, 0)}
	for i := range 10 {
		putMaterialization(t, s, ImageDigest(300+i), m)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	err := s.Materializations(ctx, func(digest.Digest, index.Materialization) error { calls++; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Materializations with cancelled context: %v after %d calls, want context.Canceled", err, calls)
	}
}
