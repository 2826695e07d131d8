#include <stdio.h>

int sum3(int, int, int);

static volatile int a = 1, b = 2, c = 3;

void corpus_step(void)
{
	printf("sum3=%d\n", sum3(a, b, c));
}
