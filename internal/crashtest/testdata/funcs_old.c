/* The functions the crash test patches, as first shipped. funcs_new.c is the
 * fix: every function returns a different constant offset, so one call tells
 * whether the old or the new code ran. They live in their own file so gcc
 * cannot inline them into the callers in target.c. */
#ifdef SPREAD
/* Never called: keeps the patched functions more than 64 KiB apart, the way
 * a fix touching several files of a big program spreads its sites, so that
 * hotfleet cannot switch them all with one write. */
#define PAD(n) \
	void hf_pad##n(void) { __asm__ volatile(".skip 69632, 0xcc"); }
#else
#define PAD(n)
#endif

int hf_f0(int x) { return x * 3 + 1000; }
PAD(0)
int hf_f1(int x) { return x * 3 + 1010; }
PAD(1)
int hf_f2(int x) { return x * 3 + 1020; }
PAD(2)
int hf_f3(int x) { return x * 3 + 1030; }
PAD(3)
int hf_f4(int x) { return x * 3 + 1040; }
