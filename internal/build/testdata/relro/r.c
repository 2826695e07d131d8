/* Constant tables holding addresses live in .data.rel.ro in PIE and -fPIC
 * code: a table of strings the fix extends, and a computed-goto dispatch
 * table whose labels point into the changed function itself. */
__attribute__((noipa)) static const char *level_name(int l)
{
#ifdef FIX
	static const char *const names[] = {"debug", "info", "warn", "error"};
#else
	static const char *const names[] = {"debug", "info", "warn"};
#endif
	if (l < 0 || l >= (int)(sizeof names / sizeof names[0]))
		return "?";
	return names[l];
}

static volatile int lvl = 3;

long level(void) { return level_name(lvl)[0]; }

__attribute__((noipa)) long run(const unsigned char *code)
{
	static const void *const ops[] = {&&add, &&mul, &&sub, &&end};
	long acc = 1;
	goto *ops[*code++];
add:
#ifdef FIX
	acc += 4;
#else
	acc += 3;
#endif
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

static const unsigned char prog[] = {0, 1, 0, 2, 3};

long interp(void) { return run(prog); }

/* An unchanged constant the changed score() reads: new code uses the
 * target's copy, at the address the rest of the program knows. */
static const long weights[8] = {3, 1, 4, 1, 5, 9, 2, 6};
const long *weights_addr(void) { return weights; }
static volatile int pick = 5;

__attribute__((noipa)) long score(void)
{
#ifdef FIX
	return weights[pick] * 10 + (weights_addr() == weights);
#else
	return weights[pick] + (weights_addr() == weights);
#endif
}

/* An unchanged table of function pointers, one to the changed score():
 * new code must use the target's table, whose address old code knows. */
struct ops {
	long (*run)(void);
	const char *name;
};
static const struct ops score_ops = {score, "score"};
const struct ops *volatile current_ops = &score_ops;

__attribute__((noipa)) long same_ops(void)
{
#ifdef FIX
	return (current_ops == &score_ops) * 10 + 2;
#else
	return (current_ops == &score_ops) * 10 + 1;
#endif
}

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"level", level}, {"interp", interp}, {"score", score}, {"same_ops", same_ops}, {0, 0}};
