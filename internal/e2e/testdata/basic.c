/* basic.c: a function with a visible bug the tests fix; the answer to
 * "call 5" is 51 before the fix. */
#include <stdio.h>

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	return snprintf(out, n, "%ld", x * 10 + 1);
}
