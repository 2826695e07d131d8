/* With -fcf-protection=full every function starts with endbr64, and the
 * jump goes after it: log_level is 10 bytes, just enough room. */
#include <stdio.h>

__attribute__((noinline)) int log_level(void)
{
	return 2;
}

void corpus_step(void)
{
	printf("level=%d\n", log_level());
}
