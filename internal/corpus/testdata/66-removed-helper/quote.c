/* The fix deletes the helper escape_quotes and does the work inline in
 * quote: the helper is dropped from the fixed object, nothing calls it. */
#include <stdio.h>

static __attribute__((noinline)) int escape_quotes(const char *s, char *out)
{
	int n = 0;

	for (; *s; s++) {
		if (*s == '"')
			out[n++] = '\\';
		out[n++] = *s;
	}
	out[n] = 0;
	return n;
}

__attribute__((noinline)) void quote(const char *s)
{
	char buf[64];

	escape_quotes(s, buf);
	printf("\"%s\"\n", buf);
}

static const char *volatile text = "say \"hi\"";

void corpus_step(void)
{
	quote(text);
}
