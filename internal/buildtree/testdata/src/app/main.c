/* main.c: the executable. It reads one command per line and prints one
 * answer line, so a test sees what the very next call runs:
 *   lib    foo_value(1), from libfoo
 *   app    app_value(1)
 *   line   where_am_i(): a line number from __LINE__
 *   limit  the LIMIT of config.h
 *   asm    asm_value(), from fast.S
 *   util   util_value(1), from util.c
 *   file   where_file(1): a file name from __FILE__
 *   scaled scaled(1), which has scale() inlined */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "foo.h"

int asm_value(void);
int util_value(int x);

static __attribute__((noipa)) int helper(int x)
{
	int r = 0;

	for (int i = 0; i < x; i++)
		r += 2;
	return r;
}

__attribute__((noipa)) int app_value(int x)
{
	return helper(x) + 1000;
}

__attribute__((noipa)) int where_am_i(void)
{
	return __LINE__;
}

__attribute__((noipa)) const char *where_file(int x)
{
	return x ? __FILE__ : "no file";
}

static inline int scale(int x)
{
	int r = 0;

	for (int i = 0; i < x; i++)
		r += 4;
	return r;
}

__attribute__((noipa)) int scaled(int x)
{
	return scale(x) + 7;
}

__attribute__((noipa)) int limit(void)
{
	return LIMIT;
}

int main(void)
{
	char line[64];

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strcmp(line, "lib") == 0)
			printf("%d\n", foo_value(1));
		else if (strcmp(line, "app") == 0)
			printf("%d\n", app_value(1));
		else if (strcmp(line, "line") == 0)
			printf("%d\n", where_am_i());
		else if (strcmp(line, "limit") == 0)
			printf("%d\n", limit());
		else if (strcmp(line, "util") == 0)
			printf("%d\n", util_value(1));
		else if (strcmp(line, "scaled") == 0)
			printf("%d\n", scaled(1));
		else if (strcmp(line, "file") == 0)
			printf("%s\n", where_file(1));
		else if (strcmp(line, "asm") == 0)
			printf("%d\n", asm_value());
		else
			printf("unknown %s\n", line);
	}
	return 0;
}
