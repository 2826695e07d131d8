/* Test harness: loads a linked bundle into this very process and calls the
 * new code through function pointers, or (native mode) calls the functions
 * it was linked with. Both modes print the same report, so the Go test can
 * compare a patched run with a run of the natively compiled fix.
 *
 * usage: harness MODULE patched|native
 *   MODULE: "" for the executable, or a substring of a shared library path.
 * In patched mode it prints "BIAS REGION" and reads a line
 *   "CODEFILE GREET_OFFSET CLASSIFY_OFFSET" from stdin. */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

extern int counter;
extern int greet(int);
extern int classify(int, int);
extern int get_hits(void);
extern int other(int);
extern int tick(void);

static const char *want;
static unsigned long bias, end;
static int found;

static int pick(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size; (void)data;
	int is_exe = info->dlpi_name == NULL || info->dlpi_name[0] == 0;
	if (found || (want[0] == 0 ? !is_exe : strstr(info->dlpi_name, want) == NULL))
		return 0;
	found = 1;
	bias = info->dlpi_addr;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *p = &info->dlpi_phdr[i];
		if (p->p_type == PT_LOAD && bias + p->p_vaddr + p->p_memsz > end)
			end = bias + p->p_vaddr + p->p_memsz;
	}
	return 0;
}

static void report(int (*g)(int), int (*c)(int, int))
{
	int t = tick() + tick() + tick();
	int a = g(5);
	int b = g(7);
	printf("tick=%d greet=%d,%d counter=%d hits=%d\n", t, a, b, counter, get_hits());
	for (int n = 0; n < 9; n++)
		printf("classify(%d)=%d\n", n, c(n, 11));
	printf("other=%d\n", other(2));
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	want = argv[1];
	if (strcmp(argv[2], "native") == 0) {
		report(greet, classify);
		return 0;
	}
	dl_iterate_phdr(pick, NULL);
	if (!found) {
		fprintf(stderr, "module %s not loaded\n", want);
		return 3;
	}
	/* Map the bundle code 16 MiB past the module, within rel32 reach. */
	size_t len = 1 << 20;
	void *region = MAP_FAILED;
	for (unsigned long at = (end + (16ul << 20)) & ~0xffffful; at < end + (1ul << 30); at += 1ul << 20) {
		region = mmap((void *)at, len, PROT_READ | PROT_WRITE | PROT_EXEC,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (region != MAP_FAILED)
			break;
	}
	if (region == MAP_FAILED) {
		perror("mmap");
		return 4;
	}
	printf("%lx %lx\n", bias, (unsigned long)region);
	fflush(stdout);
	char path[4096];
	unsigned long goff, coff;
	if (scanf("%4095s %lu %lu", path, &goff, &coff) != 3)
		return 5;
	FILE *f = fopen(path, "rb");
	if (!f)
		return 6;
	size_t n = fread(region, 1, len, f);
	fclose(f);
	if (n == 0)
		return 7;
	report((int (*)(int))((char *)region + goff), (int (*)(int, int))((char *)region + coff));
	return 0;
}
