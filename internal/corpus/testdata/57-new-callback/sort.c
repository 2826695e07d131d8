/* The fix passes a new comparison function to qsort: libc calls back into
 * the bundle's code through the pointer the new code computes. */
#include <stdio.h>
#include <stdlib.h>

static int ascending(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) void sort_scores(int *v, int n)
{
	qsort(v, n, sizeof *v, ascending);
}

void corpus_step(void)
{
	int v[] = {30, 10, 50, 20, 40};

	sort_scores(v, 5);
	printf("%d %d %d %d %d\n", v[0], v[1], v[2], v[3], v[4]);
}
