/* Both functions print __FILE__; the fix changes one of them. The file
 * name is the same string in both builds, so only the fixed function
 * changes and the new code prints the same name. */
#include <stdio.h>

__attribute__((noinline)) void where_a(int v)
{
	printf("%s:a=%d ", __FILE__, v);
}

__attribute__((noinline)) void where_b(int v)
{
	printf("%s:b=%d\n", __FILE__, v);
}

static volatile int v = 3;

void corpus_step(void)
{
	where_a(v);
	where_b(v);
}
