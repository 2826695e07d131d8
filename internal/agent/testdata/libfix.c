/* libfix.c: a shared library the target links at start. */
__attribute__((noinline)) int lib_answer(void) { return 1; }
