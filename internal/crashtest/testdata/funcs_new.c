/* The fixed version of funcs_old.c: same shape, new constants. */
#ifdef SPREAD
/* Never called: keeps the patched functions more than 64 KiB apart, the way
 * a fix touching several files of a big program spreads its sites, so that
 * hotfleet cannot switch them all with one write. */
#define PAD(n) \
	void hf_pad##n(void) { __asm__ volatile(".skip 69632, 0xcc"); }
#else
#define PAD(n)
#endif

int hf_f0(int x) { return x * 3 + 5000; }
PAD(0)
int hf_f1(int x) { return x * 3 + 5010; }
PAD(1)
int hf_f2(int x) { return x * 3 + 5020; }
PAD(2)
int hf_f3(int x) { return x * 3 + 5030; }
PAD(3)
int hf_f4(int x) { return x * 3 + 5040; }
