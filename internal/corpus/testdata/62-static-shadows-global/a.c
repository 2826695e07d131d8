/* a.c's static check and static calls have the same names as b.c's global
 * check and b.c's own static calls. The fix changes a.c's check, which
 * must be located, and bound to a.c's calls, by file. */
static int calls;

static __attribute__((noinline)) int check(int v)
{
	calls++;
	return v > 10 ? calls : -calls;
}

int a_check(int v)
{
	return check(v);
}
