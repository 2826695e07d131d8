/* block.c: threads blocked in read(2) on fd 3, epoll_wait(2) on fd 4 and
 * nanosleep(2) for 2 s at a time. Hot patching must be invisible to them: an
 * EINTR, a spurious wakeup or a short sleep is reported as "ERR" and the
 * target exits with status 2.
 *
 * Events: "event read DATA", "event epoll DATA".
 * Commands besides serve.h's: "sleeps" answers how many 2 s sleeps ended.
 */
#include "serve.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <time.h>

int answer(long x, const char *arg, char *out, size_t n);

static atomic_long sleeps;

static void *reader(void *p)
{
	(void)p;
	char buf[256];
	for (;;) {
		ssize_t r = read(3, buf, sizeof buf - 1);
		if (r < 0)
			fail("read on fd 3: %s", strerror(errno));
		if (r == 0) {
			event("read EOF");
			return NULL;
		}
		buf[r] = 0;
		buf[strcspn(buf, "\n")] = 0;
		event("read %s", buf);
	}
}

static void *poller(void *p)
{
	(void)p;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		fail("epoll_create1: %s", strerror(errno));
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = 4};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, 4, &ev) != 0)
		fail("epoll_ctl fd 4: %s", strerror(errno));
	for (;;) {
		struct epoll_event got;
		int k = epoll_wait(ep, &got, 1, -1);
		if (k < 0)
			fail("epoll_wait: %s", strerror(errno));
		if (k == 0)
			fail("epoll_wait with no timeout returned no event");
		char buf[256];
		ssize_t r = read(4, buf, sizeof buf - 1);
		if (r <= 0)
			fail("epoll_wait said fd 4 is readable but read gave %zd (%s)", r, strerror(errno));
		buf[r] = 0;
		buf[strcspn(buf, "\n")] = 0;
		event("epoll %s", buf);
	}
	return NULL;
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *sleeper(void *p)
{
	(void)p;
	for (;;) {
		struct timespec ts = {2, 0}, rem;
		long long t0 = now_ns();
		if (nanosleep(&ts, &rem) != 0)
			fail("nanosleep(2s): %s with %ld.%09ld s left", strerror(errno), (long)rem.tv_sec, rem.tv_nsec);
		long long slept = now_ns() - t0;
		if (slept < 2000000000LL)
			fail("nanosleep(2s) returned after %lld ns", slept);
		atomic_fetch_add(&sleeps, 1);
	}
	return NULL;
}

static int extra(const char *cmd, const char *arg, char *out, size_t n)
{
	(void)arg;
	if (strcmp(cmd, "sleeps") != 0)
		return 0;
	snprintf(out, n, "%ld", atomic_load(&sleeps));
	return 1;
}

int main(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, reader, NULL) || pthread_create(&t, NULL, poller, NULL) ||
	    pthread_create(&t, NULL, sleeper, NULL))
		fail("pthread_create failed");
	serve(answer, extra);
	return 0;
}
