/* detach: runs argv[1..] in a grandchild whose parent has exited, so that it
 * is no longer a descendant of whoever started detach (like a daemon), and
 * prints the grandchild's pid. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int p[2];
	if (pipe(p) != 0)
		return 3;
	pid_t child = fork();
	if (child < 0)
		return 4;
	if (child == 0) {
		pid_t grandchild = fork();
		if (grandchild == 0) {
			close(p[0]);
			close(p[1]);
			/* Leave the caller's stdout, or it waits for our end. */
			int null = open("/dev/null", O_WRONLY);
			if (null < 0 || dup2(null, 1) < 0)
				_exit(126);
			close(null);
			execv(argv[1], argv + 1);
			_exit(127);
		}
		if (write(p[1], &grandchild, sizeof grandchild) != sizeof grandchild)
			_exit(5);
		_exit(0);
	}
	close(p[1]);
	pid_t grandchild;
	if (read(p[0], &grandchild, sizeof grandchild) != sizeof grandchild)
		return 6;
	waitpid(child, NULL, 0);
	printf("%d\n", (int)grandchild);
	return 0;
}
