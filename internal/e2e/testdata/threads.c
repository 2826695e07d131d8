/* threads.c: NTHREADS workers call compute() in a tight loop and classify
 * every result as old (offset 1000), new (offset 2000) or garbage.
 *
 * Commands besides serve.h's:
 *   window MS   zero the per-thread counts, let the workers run MS ms, then
 *               answer "calls=C old=O new=N threads_old=TO threads_new=TN
 *               idle=I bad=B" (bad counts since start)
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

static int extra(const char *cmd, const char *arg, char *out, size_t n)
{
	if (strcmp(cmd, "window") != 0)
		return 0;
	long ms = strtol(arg, NULL, 10);
	for (int i = 0; i < NTHREADS; i++) {
		atomic_store(&counts[i].old, 0);
		atomic_store(&counts[i].new_, 0);
	}
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		fail("window: nanosleep: %s", strerror(errno));
	long calls = 0, old = 0, new_ = 0, told = 0, tnew = 0, idle = 0;
	for (int i = 0; i < NTHREADS; i++) {
		long o = atomic_load(&counts[i].old), w = atomic_load(&counts[i].new_);
		old += o;
		new_ += w;
		calls += o + w;
		told += o > 0;
		tnew += w > 0;
		idle += o + w == 0;
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
