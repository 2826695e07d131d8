#include <stdio.h>

int volume(int);
int balance(int);
int treble(int);

static volatile int in = 90;

void corpus_step(void)
{
	printf("volume=%d balance=%d treble=%d\n", volume(in), balance(in), treble(in));
}
