#include <stdio.h>

__attribute__((noinline)) void greet(const char *who, int n)
{
	printf("hello %s #%d\n", who, n);
}

void corpus_step(void)
{
	static int n;

	greet("world", ++n);
}
