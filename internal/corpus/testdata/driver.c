/* The loop every corpus program runs: it prints "ready", then calls the
 * case's corpus_step once per line read from stdin. corpus_step prints
 * exactly one line, which is what the runner compares before the patch,
 * while it is applied, and after it is reverted. */
#include <stdio.h>

void corpus_step(void);

int main(void)
{
	char line[64];

	puts("ready");
	fflush(stdout);
	while (fgets(line, sizeof line, stdin)) {
		corpus_step();
		fflush(stdout);
	}
	return 0;
}
