/* A library of the program that the fix does not change. */
int dep_base(int x)
{
	return x * 10;
}

int dep_bonus(int x)
{
	return x + 7;
}
