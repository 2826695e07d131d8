/* hold: stays alive until one read of its stdin returns (a byte, or end of
 * file), so a test decides when it moves on. Then it exits with the status
 * given as argv[1], or, when argv[2] is given, executes that program with the
 * arguments after it (an exec in a process that already ran). */
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
	char c;
	if (read(0, &c, 1) < 0)
		return 126;
	if (argc > 2) {
		execv(argv[2], argv + 2);
		return 127;
	}
	return argc > 1 ? atoi(argv[1]) : 0;
}
