/* libb.c: a shared library the target loads with dlopen. */
#include <stdio.h>

int dl_answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	return snprintf(out, n, "libb %ld", x + 200);
}
