/* The fix adds a static function, sanitize, that only the new code calls. */
#include <stdio.h>

__attribute__((noinline)) void show_name(const char *s)
{
	printf("name=%s\n", s);
}

static const char *volatile input = "bob;rm -rf";

void corpus_step(void)
{
	show_name(input);
}
