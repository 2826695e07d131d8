/* threads.c: NTHREADS workers call compute() in a tight loop and classify
 * every result as old (offset 1000), new (offset 2000) or garbage.
 *
 * Commands besides serve.h's:
 *   window N    zero the per-thread counts, wait until every worker made at
 *               least N calls (at most WINDOW_LIMIT_MS), then answer
 *               "calls=C old=O new=N threads_old=TO threads_new=TN idle=I
 *               bad=B": idle counts workers that made fewer than N calls,
 *               bad counts garbage results since start
 */
#include "serve.h"
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define NTHREADS 16

int answer(long x, const char *arg, char *out, size_t n);
long compute(long x);

struct counts {
	atomic_long old, new_;
	char pad[64];
};

static struct counts counts[NTHREADS];
static atomic_long bad;

static void *worker(void *p)
{
	struct counts *c = p;
	long x = (long)(c - counts);
	for (;;) {
		x = (x * 1103515245 + 12345) & 0xffffff;
		long r = compute(x) - (x * 7 + 3) % 1000;
		if (r == 1000)
			atomic_fetch_add_explicit(&c->old, 1, memory_order_relaxed);
		else if (r == 2000)
			atomic_fetch_add_explicit(&c->new_, 1, memory_order_relaxed);
		else if (atomic_fetch_add(&bad, 1) == 0)
			event("garbage: compute(%ld) gave offset %ld", x, r);
	}
	return NULL;
}

/* WINDOW_LIMIT_MS bounds one window: 16 spinning threads on two cores each
 * run within tens of milliseconds, so 10 s means a thread no longer runs. */
#define WINDOW_LIMIT_MS 10000

static long calls_of(int i)
{
	return atomic_load(&counts[i].old) + atomic_load(&counts[i].new_);
}

static int extra(const char *cmd, const char *arg, char *out, size_t n)
{
	if (strcmp(cmd, "window") != 0)
		return 0;
	long want = strtol(arg, NULL, 10);
	for (int i = 0; i < NTHREADS; i++) {
		atomic_store(&counts[i].old, 0);
		atomic_store(&counts[i].new_, 0);
	}
	for (int ms = 0; ms < WINDOW_LIMIT_MS; ms++) {
		int done = 0;
		for (int i = 0; i < NTHREADS; i++)
			done += calls_of(i) >= want;
		if (done == NTHREADS)
			break;
		struct timespec ts = {0, 1000000L};
		if (nanosleep(&ts, NULL) != 0)
			fail("window: nanosleep: %s", strerror(errno));
	}
	long calls = 0, old = 0, new_ = 0, told = 0, tnew = 0, idle = 0;
	for (int i = 0; i < NTHREADS; i++) {
		long o = atomic_load(&counts[i].old), w = atomic_load(&counts[i].new_);
		old += o;
		new_ += w;
		calls += o + w;
		told += o > 0;
		tnew += w > 0;
		idle += o + w < want;
	}
	snprintf(out, n, "calls=%ld old=%ld new=%ld threads_old=%ld threads_new=%ld idle=%ld bad=%ld",
		 calls, old, new_, told, tnew, idle, atomic_load(&bad));
	return 1;
}

int main(void)
{
	pthread_t t;
	for (int i = 0; i < NTHREADS; i++)
		if (pthread_create(&t, NULL, worker, &counts[i]) != 0)
			fail("pthread_create: %s", strerror(errno));
	serve(answer, extra);
	return 0;
}
