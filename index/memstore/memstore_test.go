package memstore_test

import (
	"testing"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

func TestConformance(t *testing.T) {
	indextest.Run(t, func(*testing.T) index.Store { return memstore.New() })
}
