/* Two source files named util.c in different directories, both with a
 * static scale: the target's symbol table names both files "util.c". */
__attribute__((noipa)) static long scale(long x)
{
	long s = 0;
	for (long i = 0; i < x; i++)
		s += i * 3;
	return s;
}

static volatile long first_only;

__attribute__((noipa)) long one(void) { return scale(10) + first_only; }
