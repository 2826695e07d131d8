// Target for the exit tests: starts threads that keep starting short-lived
// threads, then exits on its own after argv[1] milliseconds.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *brief(void *arg) {
	(void)arg;
	struct timespec ts = {0, 200000};
	nanosleep(&ts, NULL);
	return NULL;
}

static void *spawner(void *arg) {
	(void)arg;
	for (;;) {
		pthread_t th;
		if (pthread_create(&th, NULL, brief, NULL) == 0)
			pthread_join(th, NULL);
	}
	return NULL;
}

int main(int argc, char **argv) {
	int ms = argc > 1 ? atoi(argv[1]) : 500;
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t th;
	for (int i = 0; i < 8; i++)
		pthread_create(&th, NULL, spawner, NULL);
	printf("ready %d\n", getpid());
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	exit(0);
}
