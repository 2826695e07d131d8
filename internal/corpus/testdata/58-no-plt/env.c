/* Built with -fno-plt: library calls are indirect through the GOT
 * (call *getenv@GOTPCREL(%rip)), with no PLT entry to reuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) const char *home_dir(void)
{
	const char *h = getenv("CORPUS_NO_SUCH_VAR");

	return h ? h : "/root";
}

void corpus_step(void)
{
	const char *h = home_dir();

	printf("home=%s len=%zu\n", h, strlen(h));
}
