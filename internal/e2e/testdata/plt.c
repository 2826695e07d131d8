/* plt.c: the fix makes the function call strlen, which the executable
 * already imports (the driver uses it), so the new code goes through the
 * executable's PLT/GOT. */
#include <stdio.h>
#include <string.h>

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)x;
	return snprintf(out, n, "len=%ld", (long)(arg[0] != 0));
}
