/* Functions gcc clones at -O2: a changed clone is patched at the target's
 * clone symbol, whatever number gcc gave it in the fixed build. */
#include <stdlib.h>

#ifdef FIX
#define K 4
#else
#define K 3
#endif

struct cfg {
	int a, b, c, d;
	int table[16];
};

/* Uses only two fields of *c: gcc passes them by value in weigh.isra.N. */
__attribute__((noinline)) static int weigh(const struct cfg *c, int x)
{
	int b = c->b, d = c->d;
	int s = 0;
	for (int i = 0; i < x; i++)
		s += b * i + d * K;
	return s;
}

/* Always called with factor 7: gcc specialises it as scale.constprop.N. */
__attribute__((noinline)) static int scale(int x, int factor)
{
	int s = 0;
	for (int i = 0; i < x; i++)
		s += (i ^ factor) * K;
	return s;
}

/* A cheap test up front and a big body: gcc inlines the test into callers
 * and outlines the rest as classify.part.N. */
static int classify(int x)
{
	if (x < 0)
		return -1;
	int s = 0;
	for (int i = 0; i < x; i++) {
		s += i * i * K;
		if (i % 7 == 3)
			s += x * (i + K);
		if (i % 5 == 2)
			s -= (x ^ i) * 3;
		if (s > 100000)
			s -= 99999;
		s ^= i << 3;
		s += (s >> 2) * (i & 3);
	}
	return s;
}

/* A rarely taken error path: gcc moves it to check.cold. */
__attribute__((noinline)) int check(int x)
{
	if (__builtin_expect(x > 1000000, 0)) {
		volatile int spin = x * K;
		while (spin > 0)
			spin -= 3;
		abort();
	}
	return x * K + 1;
}

/* A whole function gcc puts in .text.unlikely.slow_path: not a fragment. */
__attribute__((cold, noinline)) int slow_path(int v)
{
	int s = 0;
	for (int i = 0; i < v; i++)
		s += i * K;
	return s;
}

static struct cfg conf = {1, 2, 3, 4, {0}};
static struct cfg conf2 = {5, 6, 7, 8, {0}};
/* Read through a volatile so gcc cannot fold the calls. */
static volatile int arg[4] = {10, 20, -3, 7};

long c_weigh(void) { return weigh(&conf, arg[0]) + weigh(&conf2, arg[3]); }
__attribute__((noinline)) int weigh_any(struct cfg *c, int x) { return weigh(c, x); }
long c_scale(void) { return scale(arg[0], 7) + scale(5, 7); }
long c_classify(void) { return classify(arg[1]) + classify(arg[2]); }
long c_classify2(void) { return classify(arg[3]) * 2; }
long c_check(void) { return check(5) + slow_path(arg[0]); }
