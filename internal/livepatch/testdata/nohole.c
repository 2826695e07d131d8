/* A process with no free address space within +-2 GiB of its code: it fills
 * that span with PROT_NONE reservations, so a patch cannot be mapped in reach.
 * Like target.c, it answers "answer" lines on stdin. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

extern char __executable_start[], _end[];

__attribute__((noinline)) int answer(void) { return 1; }

static void reserve(uintptr_t a, size_t len) {
  mmap((void *)a, len, PROT_NONE,
       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
}

int main(void) {
  const uintptr_t reach = 1UL << 31, chunk = 1UL << 20, page = 4096;
  uintptr_t lo = (uintptr_t)__executable_start, hi = (uintptr_t)_end;
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("reserving\n"); /* allocates stdout's buffer before the heap is fenced */
  lo = lo > reach + 2 * chunk ? (lo - reach - chunk) & ~(chunk - 1) : 0x10000;
  hi = (hi + reach + 2 * chunk) & ~(chunk - 1);
  for (uintptr_t a = lo; a < hi; a += chunk) {
    void *p = mmap((void *)a, chunk, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != MAP_FAILED)
      continue;
    for (uintptr_t q = a; q < a + chunk; q += page)
      reserve(q, page);
  }
  printf("ready\n");
  char line[64];
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (strcmp(line, "answer") == 0)
      printf("%d\n", answer());
    else
      printf("unknown %s\n", line);
  }
  return 0;
}
