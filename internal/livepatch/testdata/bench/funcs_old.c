/* The ten functions the pause benchmark patches, as first shipped; funcs_new.c
 * is the patched version. Separate file: gcc must not inline them.
 *
 * The constants are at least 128 so that gcc encodes the whole body in one
 * 7-byte lea: no instruction starts inside the 5 bytes the jump overwrites,
 * so a thread caught in a function never makes it busy and the benchmark
 * measures the switch, not the busy-retry back-off. */
int bf0(int x) { return x * 5 + 1000; }
int bf1(int x) { return x * 5 + 1001; }
int bf2(int x) { return x * 5 + 1002; }
int bf3(int x) { return x * 5 + 1003; }
int bf4(int x) { return x * 5 + 1004; }
int bf5(int x) { return x * 5 + 1005; }
int bf6(int x) { return x * 5 + 1006; }
int bf7(int x) { return x * 5 + 1007; }
int bf8(int x) { return x * 5 + 1008; }
int bf9(int x) { return x * 5 + 1009; }
