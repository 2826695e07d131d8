/* grade reads a constant table and calls an unchanged global function of
 * the executable; the fix changes the table and the arithmetic. */
#include <stdio.h>

static const int cutoffs[] = {90, 80, 70, 60};

__attribute__((noinline)) int bonus(int score)
{
	return score > 95 ? 5 : 0;
}

__attribute__((noinline)) char grade(int score)
{
	score += bonus(score);
	for (int i = 0; i < 4; i++)
		if (score >= cutoffs[i])
			return 'A' + i;
	return 'F';
}

static volatile int s1 = 85, s2 = 65, s3 = 55;

void corpus_step(void)
{
	printf("%c%c%c\n", grade(s1), grade(s2), grade(s3));
}
