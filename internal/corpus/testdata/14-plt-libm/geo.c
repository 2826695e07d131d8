/* distance calls libm through the executable's PLT; the fixed version
 * calls another libm function the executable already imports (cbrt). */
#include <math.h>
#include <stdio.h>

__attribute__((noinline)) double distance(double x, double y)
{
	return hypot(x, y);
}

__attribute__((noinline)) double side(double v)
{
	return cbrt(v);
}

static volatile double x = 3, y = 4, v = 27;

void corpus_step(void)
{
	printf("distance=%.3f side=%.3f\n", distance(x, y), side(v));
}
