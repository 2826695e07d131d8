/* Two functions the test renames into two clones of one function
 * ("pick.constprop.0" and ".1"), numbered the other way round in the fixed
 * object, as gcc may number clones when a fix changes their order. */
static volatile int arg = 10;

__attribute__((noipa)) static int sa(int x)
{
	int s = 0;
	for (int i = 0; i < x; i++)
#ifdef FIX
		s += i * 11;
#else
		s += i * 7;
#endif
	return s;
}

__attribute__((noipa)) static int sb(int x)
{
	int s = 1;
	for (int i = 0; i < x; i++)
		s += i ^ 9;
	return s;
}

long use_a(void) { return sa(arg); }
long use_b(void) { return sb(arg); }

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"use_a", use_a}, {"use_b", use_b}, {0, 0}};
