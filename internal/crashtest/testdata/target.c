/* Target of the crash-consistency test.
 *
 * NWORKERS threads call the five patched functions hf_f0..hf_f4 in a tight
 * loop. The patch changes all five together, so in one round a thread must see
 * all old or all new results. A round may legitimately straddle the switch
 * (the thread was stopped between two calls), but then the next rounds are
 * clean; MAX_MIXED_IN_A_ROW mixed rounds in a row mean the process runs half
 * patched, which hotfleet must never allow. A wrong value of any kind is fatal
 * at once.
 *
 * Three more threads sit in blocking system calls that hotfleet's stop must
 * not disturb: read (which also serves the test's queries on stdin),
 * nanosleep and epoll_wait. An EINTR from read or nanosleep is fatal: the
 * kernel restarts them after any stop. epoll_wait is different: Linux fails
 * it with EINTR after a ptrace stop (signal(7)), and hotfleet repairs that at
 * the moment the thread stops; only a hotfleet SIGKILLed between a thread's
 * interrupt and its stop leaves the EINTR in place, which every program
 * must already handle for debuggers and SIGSTOP/SIGCONT. So this thread
 * counts such EINTRs (reported as the last field of "state") and retries.
 *
 * Every failure prints a line starting with "ERROR" on stderr and aborts, so
 * the test sees both the message and the death.
 *
 * Protocol on stdin/stdout: the target prints "ready PID" once all threads
 * run. For each "q" line it answers
 *   "state ROUNDS K0 K1 K2 K3 K4 EPOLL_EINTR"
 * where ROUNDS is the number of rounds the slowest worker completed (so the
 * test can tell that every worker still runs) and Ki is
 * 0 when hf_fi returned the old value, 1 for the new one, -1 for neither.
 * End of input makes the target exit with status 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

int hf_f0(int x);
int hf_f1(int x);
int hf_f2(int x);
int hf_f3(int x);
int hf_f4(int x);

#define NFUNCS 5
#define NWORKERS 8
/* Rounds in a row that may straddle a switch; see above. */
#define MAX_MIXED_IN_A_ROW 4

static const int old_off[NFUNCS] = {1000, 1010, 1020, 1030, 1040};
static const int new_off[NFUNCS] = {5000, 5010, 5020, 5030, 5040};

/* One counter per cache line so the workers do not slow each other down. */
static struct {
	_Atomic uint64_t rounds;
	char pad[56];
} counters[NWORKERS];

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = snprintf(buf, sizeof buf, "ERROR pid %d: ", getpid());
	vsnprintf(buf + n, sizeof buf - n, fmt, ap);
	va_end(ap);
	/* write(2) rather than stdio: other threads may hold stdio locks. */
	size_t len = strlen(buf);
	if (len > sizeof buf - 2)
		len = sizeof buf - 2;
	buf[len++] = '\n';
	if (write(2, buf, len) < 0) {
	}
	abort();
}

/* kinds fills k[i] with 0 (old), 1 (new) or -1 (neither) for input x. */
static void kinds(int x, int k[NFUNCS]) {
	int r[NFUNCS];
	r[0] = hf_f0(x);
	r[1] = hf_f1(x);
	r[2] = hf_f2(x);
	r[3] = hf_f3(x);
	r[4] = hf_f4(x);
	for (int i = 0; i < NFUNCS; i++) {
		int d = r[i] - 3 * x;
		k[i] = d == old_off[i] ? 0 : d == new_off[i] ? 1 : -1;
	}
}

static void *worker(void *arg) {
	int id = (int)(intptr_t)arg;
	int x = id * 7919;
	int mixed = 0;
	for (;;) {
		int k[NFUNCS];
		kinds(x, k);
		int same = 1;
		for (int i = 0; i < NFUNCS; i++) {
			if (k[i] < 0)
				die("worker %d: hf_f%d(%d) returned neither the old nor the new value", id, i, x);
			if (k[i] != k[0])
				same = 0;
		}
		if (same) {
			mixed = 0;
		} else if (++mixed >= MAX_MIXED_IN_A_ROW) {
			die("worker %d: %d rounds in a row mixed old and new code (last: %d %d %d %d %d): the process runs half patched",
			    id, mixed, k[0], k[1], k[2], k[3], k[4]);
		}
		atomic_fetch_add_explicit(&counters[id].rounds, 1, memory_order_relaxed);
		x = (x + 1) & 0xffffff; /* keep 3*x far from overflow */
	}
	return NULL;
}

static void *sleeper(void *arg) {
	(void)arg;
	for (;;) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		if (nanosleep(&ts, NULL) != 0)
			die("nanosleep: %s", strerror(errno));
	}
	return NULL;
}

static atomic_ulong epoll_eintr;

static void *poller(void *arg) {
	(void)arg;
	int p[2];
	if (pipe(p) != 0)
		die("pipe: %s", strerror(errno));
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1: %s", strerror(errno));
	struct epoll_event ev = {.events = EPOLLIN};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
		die("epoll_ctl: %s", strerror(errno));
	for (;;) {
		struct epoll_event out;
		int n = epoll_wait(ep, &out, 1, 50);
		if (n < 0 && errno == EINTR) {
			atomic_fetch_add(&epoll_eintr, 1);
			continue;
		}
		if (n < 0)
			die("epoll_wait: %s", strerror(errno));
		if (n > 0)
			die("epoll_wait reported an event on a pipe nobody writes");
	}
	return NULL;
}

int main(void) {
	pthread_t t;
	for (int i = 0; i < NWORKERS; i++)
		if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i) != 0)
			die("pthread_create worker %d", i);
	if (pthread_create(&t, NULL, sleeper, NULL) != 0 || pthread_create(&t, NULL, poller, NULL) != 0)
		die("pthread_create");
	printf("ready %d\n", getpid());
	fflush(stdout);

	/* The main thread is the one blocked in read. */
	char buf[64];
	for (;;) {
		ssize_t n = read(0, buf, sizeof buf);
		if (n < 0)
			die("read: %s", strerror(errno));
		if (n == 0)
			exit(0);
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != 'q')
				continue;
			int k[NFUNCS];
			kinds(12345, k);
			uint64_t rounds = UINT64_MAX;
			for (int w = 0; w < NWORKERS; w++) {
				uint64_t r = atomic_load_explicit(&counters[w].rounds, memory_order_relaxed);
				if (r < rounds)
					rounds = r;
			}
			printf("state %llu %d %d %d %d %d %lu\n", (unsigned long long)rounds, k[0], k[1], k[2], k[3], k[4], atomic_load(&epoll_eintr));
			fflush(stdout);
		}
	}
}
