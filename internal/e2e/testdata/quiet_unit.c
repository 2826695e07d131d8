/* quiet_unit.c: two functions for quiescent mode. busy_part is busy part of
 * the time (a thread spends 50 ms in it every 100 ms); stuck never returns
 * once a thread enters it with n != 0. Called with 0, each returns its tag,
 * which the fixes change. */
#include <stdio.h>
#include <time.h>

volatile long spin_count;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* noipa: answer must call the function, not an inlined copy of it. */
__attribute__((noipa)) long busy_part(long ms)
{
	long long end = now_ms() + ms;
	while (ms > 0 && now_ms() < end)
		spin_count++;
	return 1;
}

__attribute__((noipa)) long stuck(long n)
{
	if (n == 0)
		return 10;
	for (;;)
		spin_count++;
}

int answer(long x, const char *arg, char *out, size_t n)
{
	(void)x;
	(void)arg;
	return snprintf(out, n, "busy=%ld stuck=%ld", busy_part(0), stuck(0));
}
