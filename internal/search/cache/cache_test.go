package cache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func vec(dim int, x float32) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = x + float32(i)
	}
	return v
}

func TestCacheRoundTripAndLRU(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vectors.bin")
	c, err := Open(p, 4, "e1", int64(headerSize+3*RecordSize(4)))
	if err != nil {
		t.Fatal(err)
	}
	for k := uint64(1); k <= 4; k++ {
		if err := c.Put(k, vec(4, float32(k))); err != nil {
			t.Fatal(err)
		}
	}
	c.Get(1) // 1 is now more recent than 2
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Evictions != 1 || st.Entries != 3 {
		t.Fatalf("stats %+v", st)
	}
	c.Close()
	c, err = Open(p, 4, "e1", 0)
	if err != nil || c.Rebuilt != "" {
		t.Fatalf("reopen: %v %q", err, c.Rebuilt)
	}
	defer c.Close()
	if _, ok := c.Get(2); ok {
		t.Error("least recently used entry 2 survived eviction")
	}
	for _, k := range []uint64{1, 3, 4} {
		v, ok := c.Get(k)
		if !ok || v[0] != float32(k) || v[3] != float32(k)+3 {
			t.Errorf("Get(%d) = %v %v", k, v, ok)
		}
	}
	if err := c.Put(9, vec(3, 0)); err == nil {
		t.Error("Put of a wrong dimension accepted")
	}
}

func TestCacheRejectsDamagedOldAndForeignFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vectors.bin")
	c, _ := Open(p, 4, "e1", 0)
	_ = c.Put(7, vec(4, 1))
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	good, _ := os.ReadFile(p)
	for _, tc := range []struct {
		name, want string
		edit       func([]byte) []byte
		dim        int
		emb        string
	}{
		{"flipped vector byte", "checksum", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, 4, "e1"},
		{"truncated", "does not match", func(b []byte) []byte { return b[:len(b)-3] }, 4, "e1"},
		{"older version", "format version 0", func(b []byte) []byte { b[8] = 0; return b }, 4, "e1"},
		{"bad magic", "bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, 4, "e1"},
		{"short", "shorter than the header", func(b []byte) []byte { return b[:10] }, 4, "e1"},
		{"other dimension", "dimension 4", func(b []byte) []byte { return b }, 8, "e1"},
		{"other embedder", "another embedder", func(b []byte) []byte { return b }, 4, "e2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), good...))
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Open(p, tc.dim, tc.emb, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if !strings.Contains(c.Rebuilt, tc.want) {
				t.Fatalf("Rebuilt %q, want %q", c.Rebuilt, tc.want)
			}
			if _, ok := c.Get(7); ok {
				t.Fatal("served a vector from a rejected file")
			}
			// rebuilt: the next save writes a good file
			_ = c.Put(8, vec(tc.dim, 2))
			if err := c.Save(); err != nil {
				t.Fatal(err)
			}
			c2, _ := Open(p, tc.dim, tc.emb, 0)
			defer c2.Close()
			if _, ok := c2.Get(8); !ok || c2.Rebuilt != "" {
				t.Fatalf("after rebuild: %q", c2.Rebuilt)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	p := filepath.Join(f.TempDir(), "v.bin")
	c, _ := Open(p, 2, "e", 0)
	_ = c.Put(1, []float32{1, 2})
	_ = c.Save()
	c.Close()
	good, _ := os.ReadFile(p)
	f.Add(good)
	f.Add([]byte(magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, used, _, err := Decode(data, 2, "e")
		if err == nil && len(recs) > len(used) {
			t.Fatalf("%d records, %d use counts", len(recs), len(used))
		}
	})
}
