/* string.c: the fix changes a string literal, which ships in the bundle. */
#include <stdio.h>

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)x;
	return snprintf(out, n, "hello %s", arg);
}
