/* The branch that calls the cold function complain is moved out of line
 * into limit.cold; the fix changes both the hot path and the cold path. */
#include <stdio.h>

static int rejected;

__attribute__((cold, noinline)) void complain(int x)
{
	rejected++;
	printf("reject %d (#%d) ", x, rejected);
}

int limit(int x)
{
	if (x > 50) {
		complain(x);
		return -1;
	}
	return x * 3;
}
