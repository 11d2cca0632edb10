package search

// Params are the ranking parameters, for tests that tune them.
type Params = params

// SetParams sets the ranking parameters and returns the old ones.
func SetParams(p Params) Params {
	old := tune
	tune = p
	return old
}

// Invalidate makes the next search rebuild the lexical index (after
// SetParams changed ContextWeight).
func (ix *Index) Invalidate() {
	ix.mu.Lock()
	ix.dirty = true
	ix.mu.Unlock()
}
