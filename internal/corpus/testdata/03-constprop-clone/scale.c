/* Every caller passes k = 7, so gcc specialises scale into
 * scale.constprop.0 with k folded in. */
#include <stdio.h>

static __attribute__((noinline)) int scale(int x, int k)
{
	if (x > 100)
		return x / k;
	return x * k + 1;
}

int price(int x)
{
	return scale(x, 7) + 1;
}

int cost(int x)
{
	return scale(x, 7) + 2;
}

static volatile int a = 10, b = 700;

void corpus_step(void)
{
	printf("price=%d cost=%d\n", price(a), cost(b));
}
