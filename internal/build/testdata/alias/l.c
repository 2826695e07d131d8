/* Built -fPIC into a shared library: gcc gives the recursive global depth
 * a second, local name (depth.localalias) for its own calls. Both name one
 * function, which the fix changes once. */
#ifdef FIX
#define STEP 3
#else
#define STEP 2
#endif

int depth(int x) { return x > 1 ? depth(x - 1) + depth(x - 2) + STEP : x; }

static volatile int in = 5;
long lib_depth(void) { return depth(in); }

/* A second global name for depth, as libraries export internal aliases. */
extern int depth_internal_alias(int) __attribute__((alias("depth"), visibility("hidden")));
