/* short.c: a short-lived program. It calls lib_answer() of libfix.so until the agent has
 * patched it (it returns 2) or a second passed, prints how long after the
 * start of main that took in microseconds (-1 if never), and exits. */
#include <stdio.h>
#include <time.h>

int lib_answer(void);

static long long now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(void)
{
	long long t0 = now_us();
	while (now_us() - t0 < 1000000) {
		if (lib_answer() == 2) {
			printf("%lld\n", now_us() - t0);
			return 0;
		}
	}
	printf("-1\n");
	return 0;
}
