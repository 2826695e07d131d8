/* Another file of the target with its own static helper of the same name. */
__attribute__((noinline)) static int helper(int x)
{
	return x * 100 + 7;
}

__attribute__((noinline)) int other(int x) { return helper(x) - 1; }

/* A hidden global: linked into a local symbol of the target. */
__attribute__((visibility("hidden"), noinline)) int twice(int x)
{
	return 2 * x + 1;
}
