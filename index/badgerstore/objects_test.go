package badgerstore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

func objectKey(d digest.Digest, offset int64, meta uint64) []byte {
	k := append([]byte("o"+string(d)), '/')
	k = binary.BigEndian.AppendUint64(k, uint64(offset))
	return binary.BigEndian.AppendUint64(k, meta)
}

// Content objects and materializations are what a restart resumes from.
func TestObjectsAndMaterializationsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, img := indextest.LayerDigest(1), indextest.ImageDigest(1)
	objs := []index.ContentObject{{Offset: 0, Meta: 1, ID: indextest.ObjectID("a")}, {Offset: 1 << 33, Meta: 2, ID: indextest.ObjectID("b")}}
	m := index.Materialization{State: index.MaterialRunning, Updated: time.Unix(1700000000, 123)}
	s := open(t, dir)
	if err := s.PutContentObjects(ctx, d, objs); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMaterialization(ctx, img, m); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = open(t, dir)
	defer s.Close()
	id, err := s.ContentObject(ctx, d, 1<<33, 2)
	if err != nil || id != objs[1].ID {
		t.Errorf("ContentObject after reopen: %x, %v; want %x", id[:4], err, objs[1].ID[:4])
	}
	got, err := s.Materialization(ctx, img)
	if err != nil || got.State != m.State || !got.Updated.Equal(m.Updated) {
		t.Errorf("Materialization after reopen: %+v, %v; want %+v", got, err, m)
	}
}

func TestDamagedObjectRecordsAreCorrupt(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	d, img := indextest.LayerDigest(2), indextest.ImageDigest(2)

	if err := s.SetKeyForTest(objectKey(d, 512, 0), []byte("short")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ContentObject(ctx, d, 512, 0); !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("ContentObject of a short value: %v, want ErrCorrupt", err)
	}
	err := s.ContentObjects(ctx, d, func(index.ContentObject) error { return nil })
	if !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("ContentObjects over a short value: %v, want ErrCorrupt", err)
	}

	other := indextest.LayerDigest(3)
	key := append(objectKey(other, 0, 0), 'x')
	if err := s.SetKeyForTest(key, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	err = s.ContentObjects(ctx, other, func(index.ContentObject) error { return nil })
	if !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("ContentObjects over a long key: %v, want ErrCorrupt", err)
	}

	if err := s.SetKeyForTest(append([]byte("m"), img...), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Materialization(ctx, img); !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("Materialization of bad JSON: %v, want ErrCorrupt", err)
	}
	err = s.Materializations(ctx, func(digest.Digest, index.Materialization) error { return nil })
	if !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("Materializations over bad JSON: %v, want ErrCorrupt", err)
	}
}

// Writes are refused below the free-space reserve like a layer pass, and
// fail as a store failure, which callers retry, not as a fault of the
// layer or image.
func TestObjectWritesRespectFreeSpaceReserve(t *testing.T) {
	ctx := context.Background()
	s, err := badgerstore.Open(t.TempDir(), badgerstore.WithFreeSpaceReserve(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, img := indextest.LayerDigest(4), indextest.ImageDigest(4)
	check := func(what string, err error) {
		t.Helper()
		var storeErr *index.StoreError
		if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, index.ErrStateDiskFull) || !errors.As(err, &storeErr) {
			t.Errorf("%s with no room: %v; want a StoreError wrapping ENOSPC", what, err)
		}
	}
	check("PutContentObjects", s.PutContentObjects(ctx, d, []index.ContentObject{{ID: indextest.ObjectID("a")}}))
	check("PutMaterialization", s.PutMaterialization(ctx, img, index.Materialization{State: index.MaterialPending}))
	check("DeleteMaterialization", s.DeleteMaterialization(ctx, img))
	if _, err := s.ContentObject(ctx, d, 0, 0); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("refused write recorded something: %v", err)
	}
}
