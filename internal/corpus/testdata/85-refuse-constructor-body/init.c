/* The fix changes the body of a constructor: running processes ran it at
 * startup and never will again, so patching it would change nothing they
 * do. */
#include <stdio.h>

static int limit;

__attribute__((constructor, noinline)) static void setup(void)
{
	limit = 10;
}

__attribute__((noinline)) int allowed(int v)
{
	return v < limit;
}

static volatile int v = 15;

void corpus_step(void)
{
	printf("allowed=%d limit=%d\n", allowed(v), limit);
}
