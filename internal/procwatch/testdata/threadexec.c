/* threadexec: a thread other than the main one executes argv[1]; the kernel
 * first ends every other thread, the main one included, then the exec'ing
 * thread takes over the process id. */
#include <pthread.h>
#include <unistd.h>

static char **args;

static void *run(void *unused) {
	(void)unused;
	execv(args[1], args + 1);
	_exit(127);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	args = argv;
	pthread_t t;
	if (pthread_create(&t, NULL, run, NULL) != 0)
		return 3;
	for (;;)
		pause();
}
