/* tiny.c: on_event is a single "ret" instruction, too small to hold a jump;
 * the fix makes it count events. */
#include <stdio.h>

long events;

/* noipa: answer must call on_event, not inline its empty body. */
__attribute__((noipa)) void on_event(void)
{
}

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)x;
	(void)arg;
	on_event();
	return snprintf(out, n, "events=%ld", events);
}
