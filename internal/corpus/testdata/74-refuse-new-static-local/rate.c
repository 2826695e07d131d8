#include <stdio.h>

__attribute__((noinline)) int allow(int v)
{
	return v < 100;
}

static volatile int v = 5;

void corpus_step(void)
{
	printf("allow=%d\n", allow(v));
}
