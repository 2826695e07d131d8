#include <stdio.h>

__attribute__((noinline)) int take(void)
{
	static int left = 3;

	if (left <= 0)
		return 0;
	return left--;
}

void corpus_step(void)
{
	printf("take=%d\n", take());
}
