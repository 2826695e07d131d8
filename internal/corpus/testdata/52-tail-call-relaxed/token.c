/* check_token ends in a tail call to the static helper same. Built as a
 * distribution builds it (one .text section), the assembler shortens that
 * jmp to 2 bytes; built with -ffunction-sections, as the patch builder
 * needs, it is a 5-byte jmp with a relocation. The two builds of the
 * original still are the same code. */
#include <stdio.h>
#include <string.h>

static __attribute__((noinline)) int same(const char *a, const char *b, size_t n)
{
	return strncmp(a, b, n) == 0;
}

int check_token(const char *given, const char *want)
{
	return same(given, want, strlen(given));
}

static const char *volatile given = "sec", *volatile want = "secret";

void corpus_step(void)
{
	printf("accepted=%d\n", check_token(given, want));
}
