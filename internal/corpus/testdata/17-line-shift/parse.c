/* The fix adds lines to parse_len, above check_len. check_len's code is
 * unchanged, but its assert() passes __LINE__ to __assert_fail, and that
 * number moves by the lines the fix added: a shift that is not a change. */
#include <assert.h>
#include <stdio.h>

__attribute__((noinline)) int parse_len(const char *s)
{
	int n = 0;

	while (s[n] && s[n] != ';')
		n++;
	return n;
}

__attribute__((noinline)) int check_len(int n)
{
	assert(n >= 0);
	return n * 2;
}

static const char *volatile input = "abc;def";

void corpus_step(void)
{
	int n = parse_len(input);

	printf("len=%d checked=%d\n", n, check_len(n));
}
