/* A fleet of small processes for the scan benchmark: forks argv[1] children
 * that pause() (each maps the executable and libc, as a fork keeps the
 * parent's mappings), says "ready", and kills them when its stdin closes.
 * Children die with the parent if it is killed first. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 1;
	pid_t *kids = calloc(n, sizeof *kids);
	pid_t parent = getpid();
	for (int i = 0; i < n; i++) {
		pid_t p = fork();
		if (p < 0) {
			perror("fork");
			return 1;
		}
		if (p == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(0);
			for (;;)
				pause();
		}
		kids[i] = p;
	}
	printf("ready %d\n", n);
	fflush(stdout);
	char c;
	while (read(0, &c, 1) > 0)
		;
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		waitpid(kids[i], NULL, 0);
	return 0;
}
