/* Level 1 changes check_len and check_type; level 2 (the next cumulative
 * fix) drops the check_len change, which turned out wrong: replacing level
 * 1 must put check_len back to its original code. */
#include <stdio.h>

struct msg {
	int type;
	int len;
};

__attribute__((noinline)) int check_len(const struct msg *m)
{
	return m->len >= 0;
}

__attribute__((noinline)) int check_type(const struct msg *m)
{
	return m->type != 0;
}

static struct msg msgs[] = {{1, 10}, {2, 5000}, {7, 10}};

void corpus_step(void)
{
	int ok = 0;

	for (int i = 0; i < 3; i++)
		ok = ok * 10 + (check_len(&msgs[i]) && check_type(&msgs[i]));
	printf("ok=%03d\n", ok);
}
