/* The other file of the fix: its own static helper, and a call to the
 * function the fix adds to a.c. */
extern int fresh(int);

__attribute__((noipa)) static int helper(int x)
{
	int s = 1;
	for (int i = 0; i < x; i++)
#ifdef FIX
		s *= 4;
#else
		s *= 3;
#endif
	return s;
}

__attribute__((noipa)) long b_value(void)
{
#ifdef FIX
	return helper(5) + fresh(7);
#else
	return helper(5);
#endif
}
