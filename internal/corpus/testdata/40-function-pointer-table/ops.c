/* handle_put is only ever reached through a table of function pointers in
 * read-only data; the table keeps the old address, whose jump leads to the
 * new code. */
#include <stdio.h>

struct op {
	const char *name;
	int (*fn)(int);
};

static int handle_get(int v)
{
	return v + 1;
}

static int handle_put(int v)
{
	if (v > 100)
		return v - 100;
	return v * 2;
}

static const struct op ops[] = {{"get", handle_get}, {"put", handle_put}};

static volatile int v = 21, get = 0, put = 1;

void corpus_step(void)
{
	printf("%s=%d %s=%d\n", ops[get].name, ops[get].fn(v), ops[put].name, ops[put].fn(v));
}
