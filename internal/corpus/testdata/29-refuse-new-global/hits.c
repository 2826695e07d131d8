#include <stdio.h>

__attribute__((noinline)) int hit(int v)
{
	return v * 2;
}

static volatile int v = 4;

void corpus_step(void)
{
	printf("hit=%d\n", hit(v));
}
