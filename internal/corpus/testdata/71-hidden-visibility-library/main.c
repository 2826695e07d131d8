#include <stdio.h>

int kv_get(const char *k);

static const char *volatile key = "beta";

void corpus_step(void)
{
	printf("kv=%d\n", kv_get(key));
}
