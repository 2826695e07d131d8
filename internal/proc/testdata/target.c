// Target for the proc tests: busy threads doing AVX float math that check
// their own results, and threads blocked in read, epoll_wait, nanosleep and
// sigwaitinfo that fail loudly on EINTR or a short sleep. Commands arrive on stdin:
//   "status\n" prints "status <min busy progress> <sleeps> <epoll wakeups>"
//   any other line is echoed as "got <line>"; EOF exits 0.
#define _GNU_SOURCE
#include <errno.h>
#include <immintrin.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAXBUSY 256

static volatile unsigned long progress[MAXBUSY];
static volatile unsigned long sleeps;
static volatile long rtsignals; // SIGRTMIN deliveries, handled by busy threads only
static int nbusy;
static int epfd, never[2];

static void die(const char *what) {
	printf("FAIL %s\n", what);
	fflush(stdout);
	_exit(2);
}

static void on_rt(int sig) {
	(void)sig;
	__atomic_add_fetch(&rtsignals, 1, __ATOMIC_RELAXED);
}

static void *busy(void *arg) {
	long id = (long)arg;
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
	__m256d acc = _mm256_set_pd(0.0, 0.25, 0.5, 0.75);
	const __m256d step = _mm256_set1_pd(0.5);
	double base[4] = {0.75, 0.5, 0.25, 0.0};
	unsigned long k = 0;
	for (;;) {
		for (int i = 0; i < 100000; i++) {
			acc = _mm256_add_pd(acc, step);
			k++;
		}
		double out[4];
		_mm256_storeu_pd(out, acc);
		for (int l = 0; l < 4; l++)
			if (out[l] != base[l] + 0.5 * (double)k)
				die("FP state corrupt");
		progress[id]++;
	}
	return NULL;
}

static void *sleeper(void *arg) {
	(void)arg;
	for (;;) {
		struct timespec a, b, req = {1, 0};
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (nanosleep(&req, NULL) != 0)
			die(errno == EINTR ? "EINTR nanosleep" : "nanosleep");
		clock_gettime(CLOCK_MONOTONIC, &b);
		double d = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
		if (d < 1.0)
			die("short nanosleep");
		sleeps++;
	}
	return NULL;
}

static void *waiter(void *arg) {
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		if (sigwaitinfo(&set, NULL) < 0)
			die(errno == EINTR ? "EINTR sigwaitinfo" : "sigwaitinfo");
		die("sigwaitinfo returned a signal nobody sent");
	}
	return NULL;
}

static void *poller(void *arg) {
	(void)arg;
	for (;;) {
		struct epoll_event ev;
		int n = epoll_wait(epfd, &ev, 1, -1);
		if (n < 0)
			die(errno == EINTR ? "EINTR epoll_wait" : "epoll_wait");
		die("epoll_wait woke up with nothing to read");
	}
	return NULL;
}

int main(int argc, char **argv) {
	nbusy = argc > 1 ? atoi(argv[1]) : 16;
	if (nbusy < 0 || nbusy > MAXBUSY)
		return 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(never) != 0 || (epfd = epoll_create1(0)) < 0)
		return 1;
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, never[0], &ev) != 0)
		return 1;
	// Only busy threads take SIGRTMIN, so that blocked calls elsewhere are
	// never legitimately interrupted.
	struct sigaction sa = {.sa_handler = on_rt, .sa_flags = SA_RESTART};
	sigaction(SIGRTMIN, &sa, NULL);
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	sigaddset(&rt, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &rt, NULL);
	pthread_t th;
	for (long i = 0; i < nbusy; i++)
		pthread_create(&th, NULL, busy, (void *)i);
	pthread_create(&th, NULL, sleeper, NULL);
	pthread_create(&th, NULL, poller, NULL);
	pthread_create(&th, NULL, waiter, NULL);
	printf("ready %d\n", getpid());
	// The main thread is the reader: blocked in read() on stdin.
	char line[256];
	size_t have = 0;
	for (;;) {
		ssize_t n = read(0, line + have, sizeof line - 1 - have);
		if (n < 0)
			die(errno == EINTR ? "EINTR read" : "read");
		if (n == 0) {
			printf("bye\n");
			return 0;
		}
		have += n;
		line[have] = 0;
		char *nl;
		while ((nl = strchr(line, '\n')) != NULL) {
			*nl = 0;
			if (strcmp(line, "status") == 0) {
				unsigned long m = ~0UL;
				for (int i = 0; i < nbusy; i++)
					if (progress[i] < m)
						m = progress[i];
				if (nbusy == 0)
					m = 0;
				printf("status %lu %lu %ld\n", m, sleeps, rtsignals);
			} else {
				printf("got %s\n", line);
			}
			have -= nl + 1 - line;
			memmove(line, nl + 1, have + 1);
		}
		if (have >= sizeof line - 1)
			have = 0;
	}
}
