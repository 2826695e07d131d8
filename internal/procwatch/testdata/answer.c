/* answer: the small library dlopener loads. */
int answer(void) { return 42; }
