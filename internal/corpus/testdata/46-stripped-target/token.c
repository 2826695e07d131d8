/* The program is shipped stripped, as distribution packages are: the
 * build finds check_token and its static helper through the unstripped
 * rebuild of the same binary (same build-id). */
#include <stdio.h>
#include <string.h>

static __attribute__((noinline)) int same(const char *a, const char *b, size_t n)
{
	return strncmp(a, b, n) == 0;
}

int check_token(const char *given, const char *want)
{
	return same(given, want, strlen(given)) ? 1 : -1;
}

static const char *volatile given = "sec", *volatile want = "secret";

void corpus_step(void)
{
	printf("accepted=%d\n", check_token(given, want));
}
