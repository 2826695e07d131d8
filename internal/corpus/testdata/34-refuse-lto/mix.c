#include <stdio.h>

__attribute__((noinline)) int mix(int v)
{
	return v * 31 + 7;
}

static volatile int v = 2;

void corpus_step(void)
{
	printf("mix=%d\n", mix(v));
}
