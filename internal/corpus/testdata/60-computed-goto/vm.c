/* A tiny bytecode loop dispatching through a table of label addresses
 * (computed goto), as interpreters do. The table holds addresses inside
 * run itself, so it must be rebuilt for the new code. */
#include <stdio.h>

enum { OP_ADD, OP_MUL, OP_SUB, OP_END };

__attribute__((noinline)) int run(const unsigned char *code, int acc)
{
	static const void *const ops[] = {&&add, &&mul, &&sub, &&end};

	goto *ops[*code++];
add:
	acc += 3;
	goto *ops[*code++];
mul:
	acc *= 2;
	goto *ops[*code++];
sub:
	acc -= 1;
	goto *ops[*code++];
end:
	return acc;
}

static const unsigned char prog[] = {OP_ADD, OP_MUL, OP_SUB, OP_MUL, OP_END};

void corpus_step(void)
{
	printf("acc=%d\n", run(prog, 1));
}
