/* dlopener: reads the plain file argv[2], then dlopen()s the library argv[1]
 * and prints what its answer() returns. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	char buf[16];
	int fd = open(argv[2], O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof buf) < 0)
		return 3;
	close(fd);
	void *h = dlopen(argv[1], RTLD_NOW);
	if (!h) {
		fprintf(stderr, "%s\n", dlerror());
		return 4;
	}
	int (*answer)(void) = (int (*)(void))dlsym(h, "answer");
	if (!answer)
		return 5;
	printf("%d\n", answer());
	return 0;
}
