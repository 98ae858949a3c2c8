/* Test-only: loads the DLLs named on its command line, then sleeps 15 s. Under Wine this
 * measures what merely importing a set of system DLLs costs in memory (tests/bench/
 * windows-memory.sh), to tell the agent's own memory from Wine's. */
#include <stdio.h>
#include <windows.h>

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!LoadLibraryA(argv[i]))
            printf("cannot load %s\n", argv[i]);
    Sleep(15000);
    return 0;
}
