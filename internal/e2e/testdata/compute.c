/* compute.c: a hot function that 16 threads call in a tight loop. The fix
 * changes the offset from 1000 to 2000; any other result is garbage. */
#include <stdio.h>

/* noipa: answer calls compute like the workers do, instead of a copy. */
__attribute__((noipa)) long compute(long x)
{
	long r = (x * 7 + 3) % 1000;
	return r + 1000;
}

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	return snprintf(out, n, "%ld", compute(x));
}
