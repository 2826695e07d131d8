/* global.c: the function reads and writes a global and a static global;
 * old and new code must share them. */
#include <stdio.h>

long hits;
static long total;

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	hits++;
	total += x;
	return snprintf(out, n, "hits=%ld total=%ld", hits, total);
}
