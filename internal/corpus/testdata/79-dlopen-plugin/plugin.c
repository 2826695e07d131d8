/* A plugin the program loads with dlopen when it starts: the module is
 * found in the process by its build-id like any other. */
int plugin_filter(int v)
{
	return v % 2 == 0;
}
