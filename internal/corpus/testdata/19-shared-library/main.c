#include <stdio.h>

int tax(int);

static volatile int price = 12345;

void corpus_step(void)
{
	printf("tax=%d\n", tax(price));
}
