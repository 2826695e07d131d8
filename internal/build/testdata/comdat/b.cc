#include "tmpl.h"
long a_weigh();
long b_weigh() { return weigh<long>(4) + 2; }

extern "C" {
static long p_a() { return a_weigh(); }
static long p_b() { return b_weigh(); }
struct entry {
	const char *name;
	long (*fn)(void);
};
extern const struct entry entries[] = {{"p_a", p_a}, {"p_b", p_b}, {0, 0}};
}
