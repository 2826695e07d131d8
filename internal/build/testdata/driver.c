/* A process to patch: it prints "ready", then reads one function name per
 * line from stdin, calls that function of the table the program under test
 * defines, and prints what it returned. A test sees what the very next call
 * runs, before and after the patch. */
#include <stdio.h>
#include <string.h>

struct entry {
	const char *name;
	long (*fn)(void);
};

extern const struct entry entries[];

int main(void)
{
	char line[256];
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		const struct entry *e = entries;
		while (e->name && strcmp(e->name, line) != 0)
			e++;
		if (e->name)
			printf("%ld\n", e->fn());
		else
			printf("no function %s\n", line);
		fflush(stdout);
	}
	return 0;
}
