#include <stdio.h>
#include "limits.h"

int lib_ok(int v);

static volatile int v = 80;

void corpus_step(void)
{
	printf("lib=%d exe=%d\n", lib_ok(v), within(v));
}
