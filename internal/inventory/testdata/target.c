/* A process under inventory: it says "ready <pid> <tid>" and lives until its
 * stdin closes. With argument "thread" it also starts a second thread, whose
 * id it reports as <tid>. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile long tid;

static void *worker(void *arg) {
	(void)arg;
	tid = syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "thread") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, worker, NULL);
		while (tid == 0)
			usleep(1000);
	}
	printf("ready %d %ld\n", getpid(), tid);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0)
		;
	return 0;
}
