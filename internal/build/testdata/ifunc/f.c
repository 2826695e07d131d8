/* Changed code calling libc IFUNCs (memcpy, strlen, strchr) through the
 * PLT, and the program's own IFUNC add, whose resolver picks add_fast. */
#include <string.h>

#ifdef FIX
#define K 5
#else
#define K 3
#endif

__attribute__((noipa)) static long add_plain(long x) { return x + 1; }
__attribute__((noipa)) static long add_fast(long x) { return x + 1 + (K - 3) * 100; }

static long (*resolve_add(void))(long)
{
#ifdef FIX_RESOLVER
	return add_plain;
#else
	return add_fast;
#endif
}

long add(long) __attribute__((ifunc("resolve_add")));

static volatile long in = 40;
static const char *volatile msg = "hot patching without restarts";

__attribute__((noipa)) long use_libc(void)
{
	char buf[64];
	memcpy(buf, (const char *)msg, strlen((const char *)msg) + 1);
	const char *w = strchr(buf, 'w');
	return (long)strlen(buf) * K + (w ? w - buf : -1);
}

__attribute__((noipa)) long use_ifunc(void) { return add(in) * K + add_plain(in); }
long plain_add(void) { return add(in); }

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {
	{"use_libc", use_libc}, {"use_ifunc", use_ifunc}, {"plain_add", plain_add}, {0, 0}};
