/* score calls libdep.so through the PLT; the fix adds a call to another
 * function of it that the executable imports already. */
#include <stdio.h>

int dep_base(int);
int dep_bonus(int);

__attribute__((noinline)) int score(int x)
{
	return dep_base(x);
}

__attribute__((noinline)) int bonus(int x)
{
	return dep_bonus(x);
}

static volatile int in = 4;

void corpus_step(void)
{
	printf("score=%d bonus=%d\n", score(in), bonus(in));
}
