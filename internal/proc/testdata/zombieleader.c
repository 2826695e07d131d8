// Target whose main thread exits with pthread_exit, leaving a zombie thread
// group leader and two worker threads: one echoing stdin, one sleeping.
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void *echo(void *arg) {
	(void)arg;
	char buf[256];
	ssize_t n;
	while ((n = read(0, buf, sizeof buf - 1)) > 0) {
		buf[n] = 0;
		char *nl = strchr(buf, '\n');
		if (nl)
			*nl = 0;
		printf("got %s\n", buf);
	}
	printf("bye\n");
	_exit(n < 0 ? 2 : 0);
}

static void *idle(void *arg) {
	(void)arg;
	for (;;)
		pause();
}

int main(void) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	pthread_t th;
	pthread_create(&th, NULL, idle, NULL);
	pthread_create(&th, NULL, echo, NULL);
	printf("ready %d\n", getpid());
	pthread_exit(NULL);
}
