// Counter::bump is defined in the class, so every file that uses it emits
// a weak copy in its own COMDAT group; the linker keeps one. The fix to
// the header changes it in both objects: one site, patched once.
struct Counter {
	int n = 0;
	__attribute__((noinline)) int bump(int by)
	{
		n += by;
		return n;
	}
};

int use_a(Counter &c);
int use_b(Counter &c);
