/* The fix adds string literals to first(): gcc renumbers every .LC label
 * after it and moves the other literals within .rodata.str1.1, which must
 * not make second() or third() count as changed. */
#include <stdio.h>
#include <string.h>

static volatile int in = 3;

__attribute__((noipa)) long first(void)
{
#ifdef FIX
	if (in > 100)
		puts("a brand new message that shifts the others");
	return (long)strlen("first, fixed") + in;
#else
	return (long)strlen("first") + in;
#endif
}

__attribute__((noipa)) long second(void)
{
	char buf[64];
	snprintf(buf, sizeof buf, "second %d %s", in, __FILE__);
	return (long)strlen(buf);
}

__attribute__((noipa)) long third(void) { return (long)strlen("third literal") * in + printf("%s", ""); }

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"first", first}, {"second", second}, {"third", third}, {0, 0}};
