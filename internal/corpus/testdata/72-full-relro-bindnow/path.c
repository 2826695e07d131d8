/* Linked as hardened distribution packages are: -z relro -z now (the GOT
 * is resolved at startup and made read-only) with IBT-enabled PLT entries
 * (-fcf-protection: .plt.sec). New calls to imported functions go through
 * the read-only GOT slots. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int safe_path(const char *p)
{
	return strstr(p, "..") == NULL;
}

static const char *volatile path = "/srv/../etc/passwd", *volatile other = "srv/a";

void corpus_step(void)
{
	printf("safe=%d,%d first=%zu\n", safe_path(path), safe_path(other), strcspn(other, "/a"));
}
