/* A worker thread calls score() in a loop the whole time, as a server's
 * threads do; the patch is applied while it runs. Each step waits for two
 * fresh results from the worker (so one whole call started after the
 * request) and prints the last. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

__attribute__((noinline)) int score(int v)
{
	int s = 0;

	for (int i = 0; i < v; i++)
		s += i * i;
	return s % 1000;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static unsigned long generation;
static int last;
static volatile int input = 50;

static void *work(void *arg)
{
	const struct timespec pause = {0, 100000};

	(void)arg;
	for (;;) {
		int r = score(input);

		pthread_mutex_lock(&mu);
		last = r;
		generation++;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
		nanosleep(&pause, NULL);
	}
	return NULL;
}

void corpus_step(void)
{
	static pthread_t worker;
	unsigned long want;
	int r;

	if (!worker)
		pthread_create(&worker, NULL, work, NULL);
	pthread_mutex_lock(&mu);
	want = generation + 2;
	while (generation < want)
		pthread_cond_wait(&cv, &mu);
	r = last;
	pthread_mutex_unlock(&mu);
	printf("score=%d\n", r);
}
