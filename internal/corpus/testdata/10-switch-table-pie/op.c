/* A dense switch compiles to a jump table in .rodata; the fix adds a case,
 * so the table grows and must come with the new code. */
#include <stdio.h>

__attribute__((noinline)) int apply_op(int op, int a, int b)
{
	switch (op) {
	case 0: return a + b;
	case 1: return a - b;
	case 2: return a * b;
	case 3: return b ? a / b : 0;
	case 4: return a % (b ? b : 1);
	case 5: return a << b;
	case 6: return a >> b;
	default: return -1;
	}
}

static volatile int a = 12, b = 3;

void corpus_step(void)
{
	char line[128];
	int n = 0;

	for (int op = 0; op < 9; op++)
		n += snprintf(line + n, sizeof line - n, "%s%d", op ? "," : "", apply_op(op, a, b));
	puts(line);
}
