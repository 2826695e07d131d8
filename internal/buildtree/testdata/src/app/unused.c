/* unused.c: a file no build of the test project compiles, as a
 * platform-specific file of a real project. */
int unused(int x)
{
	return x + 1;
}
