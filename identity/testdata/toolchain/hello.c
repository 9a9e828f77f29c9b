#include <assert.h>
#include <stdio.h>
/* assert() compiles __FILE__ in: built in a build directory, its path is in the object. */
/* A decoy outside .comment: only the .comment section names the compiler. */
const char decoy[] = "GCC: (Decoy 99.1.0) 99.1.0";
int hello(int n) { assert(n >= 0); return printf("hello %d %s\n", n, decoy); }
