/* A process whose main thread exits with pthread_exit: the thread-group
 * leader becomes a zombie while a second thread keeps the process running
 * until stdin closes. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static void *reader(void *arg) {
	(void)arg;
	char c;
	while (read(0, &c, 1) > 0)
		;
	_exit(0);
}

int main(void) {
	pthread_t t;
	pthread_create(&t, NULL, reader, NULL);
	printf("ready %d\n", getpid());
	fflush(stdout);
	pthread_exit(NULL);
}
