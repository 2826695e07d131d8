/* short.c: a short-lived program. It calls the function the agent patches
 * until it has been patched (it returns 2) or a second passed, prints how long
 * after the start of main that took in microseconds (-1 if never), and exits.
 * Built plain, that function is exe_answer() of the program itself; built
 * with -DLIB, it is lib_answer() of libfix.so, which it links. */
#include <stdio.h>
#include <time.h>

#ifdef LIB
int lib_answer(void);
#define ANSWER lib_answer
#else
__attribute__((noinline)) int exe_answer(void) { return 1; }
#define ANSWER exe_answer
#endif

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
		if (ANSWER() == 2) {
			printf("%lld\n", now_us() - t0);
			return 0;
		}
	}
	printf("-1\n");
	return 0;
}
