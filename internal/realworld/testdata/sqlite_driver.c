/* sqlite_driver: a long-running program linked to libsqlite3.so that runs
 * the SQL it is sent against one in-memory database, the way an application
 * embedding SQLite does. Like many applications it registers a function of
 * its own, the aggregate x_count(X) (the number of non-NULL X).
 * One statement per line on stdin, one answer per line on stdout:
 *   "= ok R1|R2|..."   the rows, columns joined by ",", rows by "|"
 *   "= error MESSAGE"  the statement failed
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

static void count_step(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  sqlite3_int64 *n = sqlite3_aggregate_context(ctx, sizeof *n);
  if (n != NULL && argc == 1 && sqlite3_value_type(argv[0]) != SQLITE_NULL)
    (*n)++;
}

static void count_final(sqlite3_context *ctx) {
  sqlite3_int64 *n = sqlite3_aggregate_context(ctx, 0);
  sqlite3_result_int64(ctx, n != NULL ? *n : 0);
}

static char out[8192];
static size_t used;

static int row(void *arg, int ncol, char **vals, char **names) {
  (void)arg; (void)names;
  if (used > 0 && used < sizeof out - 1)
    out[used++] = '|';
  for (int i = 0; i < ncol && used < sizeof out - 1; i++) {
    int w = snprintf(out + used, sizeof out - used, "%s%s", i > 0 ? "," : "", vals[i] != NULL ? vals[i] : "NULL");
    if (w < 0)
      break;
    used += (size_t)w;
    if (used >= sizeof out)
      used = sizeof out - 1;
  }
  return 0;
}

int main(void) {
  sqlite3 *db;
  char line[8192];
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
    fprintf(stderr, "sqlite_driver: open: %s\n", sqlite3_errmsg(db));
    return 1;
  }
  if (sqlite3_create_function(db, "x_count", 1, SQLITE_UTF8, NULL, NULL, count_step, count_final) != SQLITE_OK) {
    fprintf(stderr, "sqlite_driver: create x_count: %s\n", sqlite3_errmsg(db));
    return 1;
  }
  while (fgets(line, sizeof line, stdin) != NULL) {
    char *err = NULL;
    line[strcspn(line, "\n")] = 0;
    used = 0;
    out[0] = 0;
    if (sqlite3_exec(db, line, row, NULL, &err) != SQLITE_OK) {
      printf("= error %s\n", err != NULL ? err : "unknown");
      sqlite3_free(err);
    } else {
      out[used] = 0;
      printf("= ok %s\n", out);
    }
  }
  sqlite3_close(db);
  return 0;
}
