/* threads: starts and joins several threads (each thread's exit is a kernel
 * exit event of a thread, not of the process), then starts one that blocks
 * for ever, says "joined", waits for end of file on stdin and exits with the
 * status given as argv[1] (default 7) while that thread still runs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NTHREADS 8

static void *work(void *arg) { return arg; }

static void *block(void *arg) {
	for (;;)
		pause();
	return arg;
}

int main(int argc, char **argv) {
	pthread_t t[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		if (pthread_create(&t[i], NULL, work, NULL) != 0)
			return 2;
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	pthread_t blocked;
	if (pthread_create(&blocked, NULL, block, NULL) != 0)
		return 2;
	printf("joined\n");
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof buf) > 0)
		;
	exit(argc > 1 ? atoi(argv[1]) : 7);
}
