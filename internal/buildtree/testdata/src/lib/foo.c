/* foo.c: libfoo. helper has the same name as a static function of the
 * executable; the builder tells them apart by file and by module. */
#include "foo.h"

static __attribute__((noipa)) int helper(int x)
{
	int r = 0;

	for (int i = 0; i < x; i++)
		r += 1;
	return r;
}

int foo_value(int x)
{
	return helper(x) * 10;
}
