/* deposit reads and writes the globals total and deposits, and a file
 * static; the new code must use the process's variables, whose values
 * carry on across the patch. */
#include <stdio.h>

long total = 1000;
int deposits;
static int largest;

__attribute__((noinline)) void deposit(int amount)
{
	total += amount;
	deposits++;
	if (amount > largest)
		largest = amount;
}

static volatile int amount = 50;

void corpus_step(void)
{
	deposit(amount);
	printf("total=%ld deposits=%d largest=%d\n", total, deposits, largest);
}
