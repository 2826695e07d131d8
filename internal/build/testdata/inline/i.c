/* clamp and limit are inlined into their callers. clamp is global, so gcc
 * also emits it out of line, but nothing calls that copy and the linker's
 * --gc-sections drops it from the target; limit only exists inlined. */
#ifdef FIX
#define TOP 80
#else
#define TOP 100
#endif

int clamp(int v)
{
	if (v < 0)
		return 0;
	if (v > TOP)
		return TOP;
	return v;
}

static inline int limit(int v)
{
	return v > TOP / 2 ? TOP / 2 : v;
}

static volatile int in = 90;

long volume(void) { return clamp(in) * 2 + limit(in); }
long balance(void) { return clamp(in - 50) + 7; }
long treble(void) { return limit(in * 3) - 1; }
long steady(void) { return in * 3 + 1; }

long mixed(void);

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {
	{"volume", volume}, {"balance", balance}, {"treble", treble}, {"steady", steady}, {"mixed", mixed}, {0, 0}};

/* Inlines clamp and is edited by the fix itself: it changes, but not only
 * because of inlining. Last in the file, so its new line moves no other. */
long mixed(void)
{
	long v = clamp(in + 5);
#ifdef FIX
	v += 1;
#endif
	return v * 3;
}
