/* Both files use MAX_NAME; the fix is a change to this header only. */
#define MAX_NAME 16
