/* quick: exits at once; the latency benchmark executes it many times. */
int main(void) { return 0; }
