package livepatch

// SetAtomicSpan changes how far apart sites may be to be written in one
// write, so tests can exercise the site-by-site path; it returns the old value.
func SetAtomicSpan(n uint64) uint64 {
	old := atomicSpan
	atomicSpan = n
	return old
}
