/* The fix adds a parameter to the static helper clip and updates its
 * callers: all three change together. */
#include <stdio.h>

static __attribute__((noinline)) int clip(int v)
{
	return v > 100 ? 100 : v;
}

__attribute__((noinline)) int width(int v) { return clip(v) + 1; }
__attribute__((noinline)) int height(int v) { return clip(v * 2) + 2; }

static volatile int in = 70;

void corpus_step(void)
{
	printf("width=%d height=%d\n", width(in), height(in));
}
