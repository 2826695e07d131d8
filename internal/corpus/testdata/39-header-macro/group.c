#include <stdio.h>
#include <string.h>
#include "limits.h"

int user_ok(const char *name);

int group_ok(const char *name)
{
	return strlen(name) + 6 < MAX_NAME;
}

static const char *volatile name = "administrator";

void corpus_step(void)
{
	printf("user_ok=%d group_ok=%d\n", user_ok(name), group_ok(name));
}
