#include <stdio.h>

static int ready;

__attribute__((constructor)) static void setup(void)
{
	ready = 1;
}

__attribute__((noinline)) int status(void)
{
	return ready * 10 + 2;
}

void corpus_step(void)
{
	printf("status=%d\n", status());
}
