#include <stdio.h>

extern int rate;
int tax(int);

static volatile int price = 1000;

void corpus_step(void)
{
	rate++;
	printf("rate=%d tax=%d\n", rate, tax(price));
}
