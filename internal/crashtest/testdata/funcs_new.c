/* The fixed version of funcs_old.c: same shape, new constants. */
int hf_f0(int x) { return x * 3 + 5000; }
int hf_f1(int x) { return x * 3 + 5010; }
int hf_f2(int x) { return x * 3 + 5020; }
int hf_f3(int x) { return x * 3 + 5030; }
int hf_f4(int x) { return x * 3 + 5040; }
