/* expat_driver: a long-running program linked to libexpat.so that parses
 * documents on request, the way a service embedding expat does. One request
 * per line on stdin, one answer per line on stdout, prefixed "= ".
 *
 *   doc XML         parse XML in one XML_Parse call; answer "ok elements=N"
 *                   or "error CODE: MESSAGE"
 *   buffer N        fill an XML_GetBuffer buffer with "<doc>" and call
 *                   XML_ParseBuffer(parser, N, 0); answer "status S error CODE"
 */
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int elements;

static void XMLCALL start(void *data, const XML_Char *name, const XML_Char **atts) {
  (void)data; (void)name; (void)atts;
  elements++;
}

static void doc(const char *xml) {
  XML_Parser p = XML_ParserCreate(NULL);
  if (p == NULL) {
    printf("= error out of memory\n");
    return;
  }
  elements = 0;
  XML_SetStartElementHandler(p, start);
  if (XML_Parse(p, xml, (int)strlen(xml), 1) == XML_STATUS_OK)
    printf("= ok elements=%d\n", elements);
  else
    printf("= error %d: %s\n", (int)XML_GetErrorCode(p), XML_ErrorString(XML_GetErrorCode(p)));
  XML_ParserFree(p);
}

static void buffer(int n) {
  XML_Parser p = XML_ParserCreate(NULL);
  if (p == NULL) {
    printf("= error out of memory\n");
    return;
  }
  void *buf = XML_GetBuffer(p, 64);
  if (buf == NULL) {
    printf("= error no buffer\n");
    XML_ParserFree(p);
    return;
  }
  memcpy(buf, "<doc>", 5);
  int st = XML_ParseBuffer(p, n, 0);
  printf("= status %d error %d\n", st, (int)XML_GetErrorCode(p));
  XML_ParserFree(p);
}

int main(void) {
  char line[4096];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin) != NULL) {
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "doc ", 4) == 0)
      doc(line + 4);
    else if (strncmp(line, "buffer ", 7) == 0)
      buffer(atoi(line + 7));
    else
      printf("= error unknown request %s\n", line);
  }
  return 0;
}
