/* The other util.c: its scale is the one the fix changes. */
__attribute__((noipa)) static long scale(long x)
{
	long s = 0;
	for (long i = 0; i < x; i++)
#ifdef FIX
		s += i * 7;
#else
		s += i * 5;
#endif
	return s;
}

static volatile long second_only;

__attribute__((noipa)) long two(void) { return scale(10) + second_only; }
