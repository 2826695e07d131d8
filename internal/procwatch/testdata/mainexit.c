/* mainexit: the main thread ends with pthread_exit while a second thread
 * lives on until end of file on stdin, then ends the process with status 5. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *wait_stdin(void *unused) {
	(void)unused;
	char c;
	while (read(0, &c, 1) > 0)
		;
	exit(5);
}

int main(void) {
	pthread_t t;
	if (pthread_create(&t, NULL, wait_stdin, NULL) != 0)
		return 3;
	pthread_exit(NULL);
}
