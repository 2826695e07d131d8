/* One of two files a fix touches. helper is static here and in b.c. */
__attribute__((noipa)) static int helper(int x)
{
	int s = 0;
	for (int i = 0; i < x; i++)
		s += i;
#ifdef FIX
	return s + 2;
#else
	return s + 1;
#endif
}

__attribute__((noipa)) long a_value(void) { return helper(10); }

#ifdef FIX
/* New in the fix, called from b.c's changed code. */
__attribute__((noipa)) int fresh(int x) { return x * 1000; }
#endif
