/* A const table of command names and handlers (.data.rel.ro in a PIE); the
 * fix adds a command with a new handler. dispatch, which reads the table,
 * gets the grown copy; the old handlers stay where they are. */
#include <stdio.h>
#include <string.h>

struct command {
	const char *name;
	int (*run)(int);
};

static int cmd_get(int v) { return v; }
static int cmd_put(int v) { return v * 2; }

static const struct command commands[] = {
	{"get", cmd_get},
	{"put", cmd_put},
};

__attribute__((noinline)) int dispatch(const char *name, int v)
{
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(commands[i].name, name) == 0)
			return commands[i].run(v);
	return -1;
}

static const char *volatile a = "put", *volatile b = "del";

void corpus_step(void)
{
	printf("put=%d del=%d\n", dispatch(a, 21), dispatch(b, 21));
}
