/* util.c: a second file of the executable, with its own static helper. */
static __attribute__((noipa)) int helper(int x)
{
	int r = 0;

	for (int i = 0; i < x; i++)
		r += 5;
	return r;
}

__attribute__((noipa)) int util_value(int x)
{
	return helper(x) + 500;
}
