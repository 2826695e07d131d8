/* At -O3 the loop is vectorised: the new code loads vector constants from
 * a mergeable constant section (.rodata.cst16) that must come with it. */
#include <stdio.h>

#define N 64

static int v[N];

__attribute__((noinline)) void scale_all(int *a, int n)
{
	for (int i = 0; i < n; i++)
		a[i] = a[i] * 3 + 7;
}

static volatile int n = N;

void corpus_step(void)
{
	long sum = 0;

	for (int i = 0; i < N; i++)
		v[i] = i;
	scale_all(v, n);
	for (int i = 0; i < N; i++)
		sum += v[i];
	printf("sum=%ld\n", sum);
}
