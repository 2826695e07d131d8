/* report writes through the stdout and stderr variables of libc; in a
 * non-PIE executable they are copy-relocated into the executable, and the
 * new code must use those copies, not libc's originals. */
#include <stdio.h>

__attribute__((noinline)) void report(int v)
{
	fprintf(stdout, "value %d\n", v);
	fflush(stderr);
}

static volatile int v = 41;

void corpus_step(void)
{
	report(v);
}
