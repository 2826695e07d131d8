#include <stdio.h>
#include "conn.h"

struct conn_stats stats;

__attribute__((noinline)) void account(int bytes)
{
	stats.bytes += bytes;
	stats.requests++;
}

static volatile int n = 100;

void corpus_step(void)
{
	account(n);
	printf("bytes=%ld requests=%d\n", stats.bytes, stats.requests);
}
