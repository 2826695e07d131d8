/* tracer.c: holds a process with PTRACE_SEIZE, like a debugger would, until
 * killed. Prints "seized" once it holds it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: tracer PID\n");
		return 2;
	}
	pid_t pid = atoi(argv[1]);
	if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) {
		printf("seize %d: %s\n", pid, strerror(errno));
		return 1;
	}
	printf("seized\n");
	fflush(stdout);
	for (;;)
		pause();
}
