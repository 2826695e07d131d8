#include <stdio.h>

int limit(int);

static volatile int ok = 20, bad = 60;

void corpus_step(void)
{
	int a = limit(ok);
	int b = limit(bad);
	printf("ok=%d bad=%d\n", a, b);
}
