/* The functions the crash test patches, as first shipped. funcs_new.c is the
 * fix: every function returns a different constant offset, so one call tells
 * whether the old or the new code ran. They live in their own file so gcc
 * cannot inline them into the callers in target.c. */
int hf_f0(int x) { return x * 3 + 1000; }
int hf_f1(int x) { return x * 3 + 1010; }
int hf_f2(int x) { return x * 3 + 1020; }
int hf_f3(int x) { return x * 3 + 1030; }
int hf_f4(int x) { return x * 3 + 1040; }
