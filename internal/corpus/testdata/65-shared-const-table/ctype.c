/* Two functions read one static const table; the fix changes the table
 * only. Both readers must be patched, or one would keep the old table. */
#include <stdio.h>

static const unsigned char is_sep[8] = {0, 1, 0, 0, 1, 0, 0, 0};

__attribute__((noinline)) int count_seps(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += is_sep[*s & 7];
	return n;
}

__attribute__((noinline)) int first_sep(const char *s)
{
	for (int i = 0; s[i]; i++)
		if (is_sep[s[i] & 7])
			return i;
	return -1;
}

static const char *volatile text = "abcdefgh";

void corpus_step(void)
{
	printf("count=%d first=%d\n", count_seps(text), first_sep(text));
}
