/* The fix clears the used part of a buffer with a loop; gcc turns the loop
 * into a call to memset, which the program never imported. The author did
 * not write the call, but the refusal must still name it. */
#include <stdio.h>

struct session {
	char user[32];
	char scratch[4096];
	unsigned used;
};

static struct session s;

__attribute__((noinline)) void reset(struct session *p)
{
	p->used = 0;
}

void corpus_step(void)
{
	s.used = 3;
	s.scratch[0] = 'x';
	reset(&s);
	printf("used=%u scratch=%c\n", s.used, s.scratch[0] ? s.scratch[0] : '-');
}
