/* static.c: the fix changes only a static function; its caller stays. */
#include <stdio.h>

/* noipa keeps scale a real function, as a patch author would need it. */
static __attribute__((noipa)) long scale(long x)
{
	if (x < 0)
		return -1;
	return x * 3;
}

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)arg;
	return snprintf(out, n, "scaled %ld", scale(x));
}
