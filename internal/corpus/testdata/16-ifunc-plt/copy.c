/* memcpy and strlen are IFUNCs in glibc: the executable's GOT holds the
 * variant chosen at startup, and the new code must call through it. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) size_t copy_name(char *dst, size_t cap, const char *src)
{
	size_t n = 0;

	while (src[n] && n + 1 < cap) {
		dst[n] = src[n];
		n++;
	}
	dst[n] = 0;
	return n;
}

static char *volatile name = "hotfleet-agent";
static volatile size_t one = 1;
char first[8];

void corpus_step(void)
{
	char buf[8];
	size_t n = copy_name(buf, sizeof buf, name);

	printf("copied %zu: %s (len %zu)\n", n, buf, strlen(name));
	memcpy(first, name, one);
}
