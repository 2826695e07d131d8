/* next_id's counter is a function-scope static: the new code must use the
 * running process's counter, so the count goes on across the patch. */
#include <stdio.h>

int next_id(void)
{
	static int last;

	last++;
	return last;
}

void corpus_step(void)
{
	printf("id=%d\n", next_id());
}
