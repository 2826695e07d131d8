#include <stdio.h>

int a_value(int);
int b_value(int);

static volatile int input = 5;

void corpus_step(void)
{
	printf("a=%d b=%d\n", a_value(input), b_value(input));
}
