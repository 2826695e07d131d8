#include <stdio.h>

__attribute__((noinline)) long stamp(long v)
{
	return v * 1000;
}

static volatile long v = 3;

void corpus_step(void)
{
	printf("stamp=%ld\n", stamp(v));
}
