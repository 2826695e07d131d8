/* liba.c: a shared library the target is linked with. */
#include <stdio.h>

int lib_answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	return snprintf(out, n, "liba %ld", x + 100);
}
