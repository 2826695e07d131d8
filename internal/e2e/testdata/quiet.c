/* quiet.c: one thread enters busy_part for 50 ms every 100 ms, another
 * enters stuck and never leaves. */
#include "serve.h"
#include <pthread.h>
#include <time.h>

int answer(long x, const char *arg, char *out, size_t n);
long busy_part(long ms);
long stuck(long n);

static void *busy(void *p)
{
	(void)p;
	for (;;) {
		busy_part(50);
		struct timespec ts = {0, 50 * 1000000L};
		if (nanosleep(&ts, NULL) != 0)
			fail("nanosleep: %s", strerror(errno));
	}
	return NULL;
}

static void *spinner(void *p)
{
	(void)p;
	stuck(1);
	fail("stuck returned");
	return NULL;
}

int main(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, busy, NULL) || pthread_create(&t, NULL, spinner, NULL))
		fail("pthread_create failed");
	serve(answer, NULL);
	return 0;
}
