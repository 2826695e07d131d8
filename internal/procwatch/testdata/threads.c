/* threads: starts and joins several threads (each thread's exit is a kernel
 * exit event of a thread, not of the process), says "joined", then waits for
 * end of file on stdin and exits with status 7. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define NTHREADS 8

static void *work(void *arg) { return arg; }

int main(void) {
	pthread_t t[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		if (pthread_create(&t[i], NULL, work, NULL) != 0)
			return 2;
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	printf("joined\n");
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof buf) > 0)
		;
	exit(7);
}
