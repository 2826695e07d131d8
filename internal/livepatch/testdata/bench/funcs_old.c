/* The ten functions the pause benchmark patches, as first shipped; funcs_new.c
 * is the patched version. Separate file: gcc must not inline them. */
int bf0(int x) { return x * 5 + 100; }
int bf1(int x) { return x * 5 + 101; }
int bf2(int x) { return x * 5 + 102; }
int bf3(int x) { return x * 5 + 103; }
int bf4(int x) { return x * 5 + 104; }
int bf5(int x) { return x * 5 + 105; }
int bf6(int x) { return x * 5 + 106; }
int bf7(int x) { return x * 5 + 107; }
int bf8(int x) { return x * 5 + 108; }
int bf9(int x) { return x * 5 + 109; }
