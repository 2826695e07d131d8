/* a.c and b.c each have a static helper; the fix changes only b.c's. */
static __attribute__((noinline)) int helper(int x)
{
	return x * x + 1;
}

int a_value(int x)
{
	return helper(x) + 1000;
}
