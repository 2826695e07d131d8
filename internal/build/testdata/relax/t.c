/* check_token tail-calls its neighbour same(). Built without
 * -ffunction-sections (as distributions build), the two share .text and
 * the assembler shortens "jmp same" to 2 bytes; orig.o, built with the
 * flag, keeps the 5-byte form with a relocation. */
#include <string.h>

__attribute__((noinline)) static int same(const char *a, const char *b, unsigned long n)
{
	return strncmp(a, b, n) == 0;
}

__attribute__((noinline)) int check_token(const char *given, const char *want)
{
#ifdef FIX
	if (strlen(given) != strlen(want))
		return 0;
#endif
	return same(given, want, strlen(given));
}

static const char *volatile token = "secret", *volatile guess = "sec";

long check(void) { return check_token(guess, token); }

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"check", check}, {0, 0}};
