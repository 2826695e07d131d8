#include <stdio.h>

__attribute__((noinline)) void banner(int code)
{
	printf("status: %d (ok)\n", code);
}

static volatile int code = 200;

void corpus_step(void)
{
	banner(code);
}
