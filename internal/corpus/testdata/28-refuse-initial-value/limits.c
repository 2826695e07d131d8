#include <stdio.h>

int max_conn = 10;

__attribute__((noinline)) int admit(int n)
{
	return n < max_conn;
}

static volatile int n = 15;

void corpus_step(void)
{
	printf("admit=%d max=%d\n", admit(n), max_conn);
}
