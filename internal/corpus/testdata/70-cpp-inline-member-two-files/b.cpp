#include <cstdio>
#include "counter.h"

int use_b(Counter &c)
{
	return c.bump(10);
}

static Counter counter;

extern "C" void corpus_step(void)
{
	int a = use_a(counter);
	int b = use_b(counter);

	std::printf("a=%d b=%d\n", a, b);
}
