/* Both functions are placed in a section the program names itself; gcc
 * does not split such a section per function even with
 * -ffunction-sections. The fix changes one of the two. */
#include <stdio.h>

#define HOOK __attribute__((section(".text.hooks"), noinline))

HOOK int on_open(int fd)
{
	return fd >= 0 ? fd + 100 : -1;
}

HOOK int on_close(int fd)
{
	return fd >= 0 ? 0 : -9;
}

static volatile int fd = 3;

void corpus_step(void)
{
	printf("open=%d close=%d\n", on_open(fd), on_close(fd));
}
