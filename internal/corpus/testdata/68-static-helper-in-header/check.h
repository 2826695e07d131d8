/* A static helper defined in a header: every file that includes it gets
 * its own copy, all named valid_port. The fix to the header changes every
 * copy, each found in its own file. */
static __attribute__((noinline, unused)) int valid_port(int p)
{
	if (p <= 0)
		return 0;
	if (p > 65535)
		return 0;
	return p != 9;
}
