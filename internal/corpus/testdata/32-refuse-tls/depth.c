#include <stdio.h>

__attribute__((noinline)) int enter(int v)
{
	return v + 1;
}

static volatile int v = 1;

void corpus_step(void)
{
	printf("enter=%d\n", enter(v));
}
