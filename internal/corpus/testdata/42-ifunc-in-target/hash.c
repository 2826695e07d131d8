/* The program defines its own IFUNC: hash is resolved at startup to one of
 * two implementations; the fix changes the one it picks on x86-64,
 * hash_generic. */
#include <stdio.h>

__attribute__((noinline)) static unsigned hash_generic(const char *s)
{
	unsigned h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % 10007;
}

__attribute__((noinline)) static unsigned hash_never(const char *s)
{
	(void)s;
	return 0;
}

static unsigned (*resolve_hash(void))(const char *)
{
	return sizeof(long) == 8 ? hash_generic : hash_never;
}

unsigned hash(const char *s) __attribute__((ifunc("resolve_hash")));

static const char *volatile key = "session";

void corpus_step(void)
{
	printf("hash=%u\n", hash(key));
}
