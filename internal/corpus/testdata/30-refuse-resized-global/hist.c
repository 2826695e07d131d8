#include <stdio.h>

int hist[4];

__attribute__((noinline)) void record(int v)
{
	hist[v % 4]++;
}

static volatile int v = 6;

void corpus_step(void)
{
	record(v);
	printf("hist[2]=%d\n", hist[2]);
}
