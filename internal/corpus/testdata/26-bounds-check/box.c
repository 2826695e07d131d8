/* A security-style fix: peek reads past the end of the slots array into
 * the secret that follows it; the fix adds the bounds check. */
#include <stdio.h>

struct box {
	int slots[8];
	int secret;
};

static struct box box = {{1, 2, 3, 4, 5, 6, 7, 8}, 1337};

__attribute__((noinline)) int peek(const struct box *b, int i)
{
	if (i < 0)
		return -1;
	return b->slots[i];
}

static volatile int good = 3, bad = 8;

void corpus_step(void)
{
	printf("peek(3)=%d peek(8)=%d\n", peek(&box, good), peek(&box, bad));
}
