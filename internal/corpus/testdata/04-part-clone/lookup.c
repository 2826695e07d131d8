/* gcc splits lookup: the cheap k < 0 test is inlined into the callers, the
 * loop body becomes lookup.part.0. The fix changes the loop only. */
#include <stdio.h>

static int lookup(int k)
{
	if (k < 0)
		return -1;
	unsigned s = 0;
	for (int i = 0; i < k; i++) {
		s += ((i * 31) & 127) * i;
		s ^= s >> 3;
		if (s > 1000000)
			s -= 12345;
	}
	for (int i = 0; i < k; i++) {
		s += ((i * 7) & 63) * i;
		s ^= s << 2;
		if (s > 1000000)
			s -= 54321;
	}
	return (int)(s % 100000);
}

int get1(int k) { return lookup(k) + 1; }
int get2(int k) { return lookup(k) + 2; }
int get3(int k) { return lookup(k) + 3; }

static volatile int n = 9, neg = -4;

void corpus_step(void)
{
	printf("get1=%d get2=%d get3=%d\n", get1(n), get2(n + 1), get3(neg));
}
