#include <stdio.h>

const int weights[4] = {1, 2, 3, 4};

__attribute__((noinline)) int weigh(int i)
{
	return weights[i & 3] * 10;
}

static volatile int i = 2;

void corpus_step(void)
{
	printf("weigh=%d\n", weigh(i));
}
