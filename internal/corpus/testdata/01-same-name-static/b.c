static __attribute__((noinline)) int helper(int x)
{
	return x * x + 2;
}

int b_value(int x)
{
	return helper(x) + 2000;
}
