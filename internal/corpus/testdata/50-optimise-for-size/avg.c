/* The same fix at another optimisation level than the other cases. */
#include <stdio.h>

static int samples[] = {4, 8, 15, 16, 23, 42};

int average(const int *v, int n)
{
	int sum = 0;

	for (int i = 0; i < n; i++)
		sum += v[i];
	return sum / n;
}

static volatile int n = 4;

void corpus_step(void)
{
	printf("avg=%d\n", average(samples, n));
}
