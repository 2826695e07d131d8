#include <stdio.h>

static int calls = 100;

__attribute__((noinline)) int check(int v)
{
	calls++;
	return v * 2 + calls;
}

int a_check(int v);

static volatile int v = 20;

void corpus_step(void)
{
	int a = a_check(v);

	printf("a=%d b=%d\n", a, check(v));
}
