/* weigh only reads r->len, so gcc passes the int instead of the pointer:
 * the function exists only as the clone weigh.isra.0. */
#include <stdio.h>

struct req {
	int id;
	int len;
	char body[64];
};

static __attribute__((noinline)) int weigh(const struct req *r)
{
	if (r->len > 40)
		return -1;
	return r->len * 5 + 3;
}

int handle(struct req *r)
{
	return weigh(r) + 1;
}

int handle_twice(struct req *r)
{
	return weigh(r) * 2;
}

static struct req small = {1, 7, "x"}, big = {2, 45, "y"};

void corpus_step(void)
{
	printf("small=%d,%d big=%d\n", handle(&small), handle_twice(&small), handle(&big));
}
