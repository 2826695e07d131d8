static __attribute__((noinline)) int helper(int x) { return x * 2; }
extern int one(int);
int main(int argc, char **argv) { return one(argc) + helper(argc); }
