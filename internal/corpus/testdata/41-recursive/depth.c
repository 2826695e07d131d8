/* walk calls itself: the new code's recursive call must go to the new code. */
#include <stdio.h>

__attribute__((noinline)) int walk(int n, int acc)
{
	if (n <= 0)
		return acc;
	return walk(n - 1, acc + n) + (n & 1);
}

static volatile int n = 10;

void corpus_step(void)
{
	printf("walk=%d\n", walk(n, 0));
}
