package ledger

import (
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
)

// The tree is kept as:
//   - leaf hashes in the index file (32 of the 40 bytes per entry),
//   - the roots of complete 256-leaf subtrees ("tiles", level 8) in the
//     tiles file, from which all complete nodes at levels >= 8 are kept in
//     memory (about 64 bytes per 256 entries),
//   - the leaf hashes of the last, incomplete 256-leaf group in memory,
//   - a compact range over [0, size) for appending and computing the root.
//
// A node below level 8 is recomputed from at most 256 leaf hashes (one
// 10 KiB read of the index), so any proof needs at most two small reads.
const (
	tileHeight = 8
	tileWidth  = 1 << tileHeight
)

var (
	hasher  = rfc6962.DefaultHasher
	factory = &compact.RangeFactory{Hash: hasher.HashChildren}
)

type tree struct {
	size  uint64
	upper [][][]byte // upper[l]: complete nodes at level tileHeight+l, by index
	tail  [][]byte   // leaf hashes of [size&^(tileWidth-1), size)
	rng   *compact.Range
}

// buildTree reconstructs the tree of the given size from the tile hashes
// (size/256 of them) and the leaf hashes of the incomplete last group.
func buildTree(size uint64, tiles, tail [][]byte) (*tree, error) {
	if uint64(len(tiles)) != size/tileWidth || uint64(len(tail)) != size%tileWidth {
		return nil, fmt.Errorf("tree of size %d needs %d tile hashes and %d tail leaves, have %d and %d",
			size, size/tileWidth, size%tileWidth, len(tiles), len(tail))
	}
	t := &tree{size: size, tail: tail}
	if len(tiles) > 0 {
		t.upper = [][][]byte{tiles}
		for l := 0; len(t.upper[l]) >= 2; l++ {
			prev := t.upper[l]
			next := make([][]byte, len(prev)/2)
			for i := range next {
				next[i] = hasher.HashChildren(prev[2*i], prev[2*i+1])
			}
			t.upper = append(t.upper, next)
		}
	}
	ids := compact.RangeNodes(0, size, nil)
	hashes := make([][]byte, len(ids))
	for i, id := range ids {
		h, err := t.node(id, nil)
		if err != nil {
			return nil, err
		}
		hashes[i] = h
	}
	rng, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, err
	}
	t.rng = rng
	return t, nil
}

func (t *tree) tiles() int {
	if len(t.upper) == 0 {
		return 0
	}
	return len(t.upper[0])
}

// append adds one leaf hash.
func (t *tree) append(leaf []byte) error {
	t.tail = append(t.tail, leaf)
	err := t.rng.Append(leaf, func(id compact.NodeID, h []byte) {
		if id.Level < tileHeight {
			return
		}
		l := int(id.Level - tileHeight)
		for len(t.upper) <= l {
			t.upper = append(t.upper, nil)
		}
		t.upper[l] = append(t.upper[l], h)
	})
	t.size++
	if t.size%tileWidth == 0 {
		t.tail = nil
	}
	return err
}

func (t *tree) root() []byte {
	if t.size == 0 {
		return hasher.EmptyRoot()
	}
	r, _ := t.rng.GetRootHash(nil)
	return r
}

type treeMark struct {
	size      uint64
	upperLens []int
	tail      [][]byte
	rng       [][]byte
}

func (t *tree) mark() treeMark {
	m := treeMark{size: t.size, tail: t.tail, rng: append([][]byte(nil), t.rng.Hashes()...)}
	for _, u := range t.upper {
		m.upperLens = append(m.upperLens, len(u))
	}
	return m
}

func (t *tree) restore(m treeMark) {
	t.size, t.tail = m.size, m.tail
	t.upper = t.upper[:len(m.upperLens)]
	for i, n := range m.upperLens {
		t.upper[i] = t.upper[i][:n]
	}
	t.rng, _ = factory.NewRange(0, m.size, m.rng)
}

// groupReader returns the 256 leaf hashes of a complete group g.
type groupReader func(g uint64) ([][]byte, error)

// node returns the hash of a complete (perfect) node inside [0, size).
func (t *tree) node(id compact.NodeID, readGroup groupReader) ([]byte, error) {
	begin, end := id.Coverage()
	if end > t.size || end <= begin {
		return nil, fmt.Errorf("node %d/%d is not complete in a tree of size %d", id.Level, id.Index, t.size)
	}
	if id.Level >= tileHeight {
		l := int(id.Level - tileHeight)
		if l >= len(t.upper) || id.Index >= uint64(len(t.upper[l])) {
			return nil, fmt.Errorf("node %d/%d missing from the tile cache", id.Level, id.Index)
		}
		return t.upper[l][id.Index], nil
	}
	g := begin / tileWidth
	var leaves [][]byte
	if g == t.size/tileWidth {
		leaves = t.tail
	} else {
		if readGroup == nil {
			return nil, fmt.Errorf("node %d/%d needs leaf group %d", id.Level, id.Index, g)
		}
		var err error
		if leaves, err = readGroup(g); err != nil {
			return nil, err
		}
	}
	base := g * tileWidth
	return subtreeRoot(leaves[begin-base : end-base]), nil
}

// subtreeRoot hashes a power-of-two number of leaf hashes into their root.
func subtreeRoot(hs [][]byte) []byte {
	if len(hs) == 1 {
		return hs[0]
	}
	level := make([][]byte, len(hs)/2)
	for i := range level {
		level[i] = hasher.HashChildren(hs[2*i], hs[2*i+1])
	}
	for len(level) > 1 {
		for i := 0; i < len(level)/2; i++ {
			level[i] = hasher.HashChildren(level[2*i], level[2*i+1])
		}
		level = level[:len(level)/2]
	}
	return level[0]
}
