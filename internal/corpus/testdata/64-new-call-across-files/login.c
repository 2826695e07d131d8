#include <stdio.h>
#include <string.h>

void audit(const char *what);

__attribute__((noinline)) int login(const char *user)
{
	return strcmp(user, "root") != 0;
}

static const char *volatile user = "root";

void corpus_step(void)
{
	printf("login=%d\n", login(user));
	if (!user[0])
		audit("empty");
}
