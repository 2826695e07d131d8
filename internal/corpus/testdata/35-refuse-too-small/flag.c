#include <stdio.h>

__attribute__((noinline)) int enabled(void)
{
	return 0;
}

void corpus_step(void)
{
	printf("enabled=%d\n", enabled());
}
