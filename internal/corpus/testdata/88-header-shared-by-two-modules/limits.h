/* Included by the library and by the executable: a fix to this header
 * changes both modules, and one bundle carries both. */
static inline int within(int v)
{
	return v >= 0 && v < 100;
}
