/* libxml2_driver: a long-running program linked to libxml2.so.2 that
 * handles requests the way a service embedding libxml2 does. One request
 * per line on stdin, one answer per line on stdout, prefixed "= ".
 *
 *   qname LOCAL PREFIX LEN   call xmlBuildQName(LOCAL, PREFIX, buf, LEN) with
 *                            a 64-byte buf; answer the name, or "(null)"
 *   doc XML                  parse XML; answer "ok elements=N attributes=M"
 *                            or "error MESSAGE"
 */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void count(xmlNodePtr n, int *elems, int *attrs) {
  for (; n != NULL; n = n->next) {
    if (n->type != XML_ELEMENT_NODE)
      continue;
    (*elems)++;
    for (xmlAttrPtr a = n->properties; a != NULL; a = a->next)
      (*attrs)++;
    count(n->children, elems, attrs);
  }
}

static void qname(char *args) {
  char *local = strtok(args, " ");
  char *prefix = strtok(NULL, " ");
  char *len = strtok(NULL, " ");
  if (local == NULL || prefix == NULL || len == NULL) {
    printf("= error usage: qname LOCAL PREFIX LEN\n");
    return;
  }
  xmlChar buf[64];
  xmlChar *q = xmlBuildQName((const xmlChar *)local, (const xmlChar *)prefix, buf, atoi(len));
  if (q == NULL) {
    printf("= (null)\n");
    return;
  }
  printf("= %s\n", (const char *)q);
  if (q != buf && q != (xmlChar *)local)
    xmlFree(q);
}

static void doc(const char *xml) {
  xmlDocPtr d = xmlReadMemory(xml, (int)strlen(xml), "request.xml", NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (d == NULL) {
    const xmlError *e = xmlGetLastError();
    printf("= error %s", e != NULL && e->message != NULL ? e->message : "unknown\n");
    return;
  }
  int elems = 0, attrs = 0;
  count(xmlDocGetRootElement(d), &elems, &attrs);
  printf("= ok elements=%d attributes=%d\n", elems, attrs);
  xmlFreeDoc(d);
}

int main(void) {
  char line[4096];
  setvbuf(stdout, NULL, _IOLBF, 0);
  LIBXML_TEST_VERSION
  while (fgets(line, sizeof line, stdin) != NULL) {
    line[strcspn(line, "\n")] = 0;
    if (strncmp(line, "qname ", 6) == 0)
      qname(line + 6);
    else if (strncmp(line, "doc ", 4) == 0)
      doc(line + 4);
    else
      printf("= error unknown request %s\n", line);
  }
  xmlCleanupParser();
  return 0;
}
