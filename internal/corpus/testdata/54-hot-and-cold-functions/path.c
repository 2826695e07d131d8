/* gcc places hot functions in .text.hot.* and cold ones in
 * .text.unlikely.*: the fix changes one of each. */
#include <stdio.h>

__attribute__((hot, noinline)) int fast_path(int v)
{
	return v * 2 + 1;
}

__attribute__((cold, noinline)) int slow_path(int v)
{
	return v * 100 - 7;
}

static volatile int v = 5;

void corpus_step(void)
{
	printf("fast=%d slow=%d\n", fast_path(v), slow_path(v));
}
