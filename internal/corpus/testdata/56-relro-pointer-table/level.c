/* level_name's table of string pointers needs relocating in a PIE, so gcc
 * puts it in .data.rel.ro (read-only once loaded), not .rodata. The fix
 * adds an entry: the new table must come with the new code, with its
 * pointers relocated to the bundle's strings. */
#include <stdio.h>

__attribute__((noinline)) const char *level_name(int l)
{
	static const char *const names[] = {"debug", "info", "warn"};

	if (l < 0 || l >= (int)(sizeof names / sizeof names[0]))
		return "?";
	return names[l];
}

static volatile int a = 1, b = 3;

void corpus_step(void)
{
	printf("%s %s\n", level_name(a), level_name(b));
}
