/* libdl.c: a shared library the target loads later with dlopen(). */
__attribute__((noinline)) int dl_answer(void) { return 1; }
